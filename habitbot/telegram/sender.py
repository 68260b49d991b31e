"""The sender: every Bot API call of every process goes through `Sender.perform`.

- Sends (send*, edit*, copy/forward) take a token from the shared Redis limiter first, in
  their lane: `interactive` (replies), `alert` (operator alerts), `bulk` (reminders).
- 429: the shared pause is set for everyone for `retry_after`, then the call is retried.
- 403 (blocked, deactivated): the chat is marked blocked — no further sends until the user
  writes again — and `on_blocked` is told (the database flag).
- Other 4xx can never succeed: not retried, logged with context.
- 5xx and network failures: retried with backoff and jitter up to a bound, then reported
  ("telegram call failed after retries"); the bot keeps such a reply for later
  (`telegram.deferred`).
- Counters per lane and outcome go to one Redis hash, readable by every process.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from habitbot.http_sessions import NETWORK_ERRORS, TIMEOUT_ERRORS, Response
from habitbot.redis_client import KEY_PREFIX
from habitbot.telegram.client import BotApiClient
from habitbot.telegram.errors import TelegramError, TelegramNetworkError
from habitbot.telegram.limiter import (
    ALERT,
    BLOCKED,
    BLOCKED_PREFIX,
    BULK,
    INTERACTIVE,
    RateLimiter,
)

log = logging.getLogger(__name__)

METRICS_KEY = f"{KEY_PREFIX}metrics:sender"
# Bulk-lane counters are added up here and written at most this often (and at the end of each
# reminder batch): one Redis round trip per send fewer at high rates.
COUNTER_FLUSH_SECONDS = 1.0
BUFFERED = frozenset({"sent", "wait_ms"})  # the rest (429s, failures) is written at once
BLOCKED_TTL = 90 * 24 * 3600
MAX_TRANSIENT_ATTEMPTS = 5
MAX_RATE_LIMITED_ATTEMPTS = 20
BACKOFF_BASE = 0.5
BACKOFF_CAP = 20.0
LIMITED_PREFIXES = ("send", "edit", "copymessage", "forwardmessage")


class NotYet(Exception):
    """The chat's next send slot (or the shared pause after a 429) is further away than the
    caller is willing to wait: nothing was sent; try again in `wait` seconds."""

    def __init__(self, method: str, chat_id: Any, wait: float):
        super().__init__(f"{method}: next send slot in {wait:.2f}s")
        self.method = method
        self.chat_id = chat_id
        self.wait = wait


class ChatBlocked(TelegramError):
    """The user blocked the bot: nothing is sent until they write again."""

    def __init__(self, method: str, chat_id: Any):
        super().__init__(method, 403, "Forbidden: bot was blocked by the user (cached)")
        self.chat_id = chat_id


def _is_limited(method: str) -> bool:
    return method.lower().startswith(LIMITED_PREFIXES)


def _chat_of(params: dict[str, Any] | None) -> Any:
    return (params or {}).get("chat_id")


def error_of(method: str, response: Response) -> TelegramError | None:
    """The error an answer carries (None for a success)."""
    try:
        BotApiClient.parse_response(method, response)
    except TelegramError as exc:
        return exc
    return None


class Sender:
    def __init__(self, client: BotApiClient, conn: redis.Redis, limiter: RateLimiter,
                 on_blocked: Callable[[int], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self._redis = conn
        self.limiter = limiter
        self._on_blocked = on_blocked
        self._sleep = sleep
        # Told once per give-up when Telegram cannot be reached (network, 5xx) on a lane other
        # than `alert` (an alert about alerts failing cannot be delivered either).
        self.on_unreachable: Callable[[str], None] | None = None
        self._pending: dict[str, int] = {}
        self._pending_lock = threading.Lock()
        self._flushed_at = time.monotonic()

    # -- public ----------------------------------------------------------------------------
    def call(self, method: str, params: dict[str, Any] | None = None, *,
             lane: str = INTERACTIVE, files: dict[str, Any] | None = None) -> Any:
        """Perform and parse: returns `result` or raises TelegramError."""
        response = self.perform(method, params, files=files, lane=lane)
        return BotApiClient.parse_response(method, response)

    def send_message(self, chat_id: int, text: str, *, lane: str = INTERACTIVE,
                     **params: Any) -> dict[str, Any]:
        return self.call("sendMessage", {"chat_id": chat_id, "text": text, **params}, lane=lane)

    def unblock(self, chat_id: int) -> None:
        """The user wrote to us again: sends to them are allowed."""
        try:
            self._redis.delete(f"{BLOCKED_PREFIX}{chat_id}")
        except redis.RedisError:
            log.warning("could not clear the blocked mark", extra={"chat_id": chat_id})

    def perform(self, method: str, params: dict[str, Any] | None = None, *,
                files: dict[str, Any] | None = None, lane: str = INTERACTIVE,
                read_timeout: float | None = None,
                max_wait: float | None = None) -> Response:
        """The HTTP exchange with limiter, retries and error mapping; returns the last
        response (an error response too, for permanent errors) or raises TelegramError for
        network failures after the retries. With `max_wait`, a send whose token is further
        away than that raises `NotYet` instead of waiting for it (the bot parks the reply:
        a chat's wait for its own 1/s slot never holds a thread other chats need)."""
        limited = _is_limited(method)
        chat_id = _chat_of(params)
        transient = rate_limited = 0
        while True:
            if limited and not self._wait_for_token(chat_id, lane, method, max_wait):
                self._count(lane, "skipped_blocked")
                raise ChatBlocked(method, chat_id)
            try:
                response = self.client.raw_request(method, params, files, read_timeout)
                error = error_of(method, response)
            except TIMEOUT_ERRORS:
                response, error = None, TelegramNetworkError(method, "timeout")
            except NETWORK_ERRORS as exc:
                response, error = None, TelegramNetworkError(method, type(exc).__name__)
            if error is None:
                if limited:
                    self._count(lane, "sent")
                return response  # type: ignore[return-value]
            if error.rate_limited:
                rate_limited += 1
                self._on_rate_limited(method, chat_id, lane, error)
                if rate_limited >= MAX_RATE_LIMITED_ATTEMPTS:
                    return self._give_up(method, chat_id, lane, error, response)
                continue
            if error.transient:
                transient += 1
                if transient >= MAX_TRANSIENT_ATTEMPTS:
                    return self._give_up(method, chat_id, lane, error, response)
                self._count(lane, "retried")
                self._sleep(random.uniform(0, min(BACKOFF_CAP,
                                                  BACKOFF_BASE * 2 ** (transient - 1))))
                continue
            if error.blocked and chat_id is not None:
                self._mark_blocked(chat_id, lane, error)
            else:
                self._count(lane, "failed_permanent")
                log.warning("telegram refused the call", extra={
                    "method": method, "chat_id": chat_id, "code": error.code,
                    "description": error.description, "lane": lane})
            assert response is not None
            return response

    # -- internals -------------------------------------------------------------------------
    def _wait_for_token(self, chat_id: Any, lane: str, method: str = "",
                        max_wait: float | None = None) -> bool:
        """Take a token (False: the chat blocked the bot, nothing may be sent to it); with
        `max_wait`, raise NotYet rather than wait longer than that."""
        try:
            if max_wait is None:
                waited = self.limiter.acquire(chat_id, lane)
            else:
                waited = self._take_within(chat_id, lane, method, max_wait)
        except redis.RedisError:
            # Without Redis there is no shared budget: send slowly rather than not at all.
            log.warning("rate limiter unavailable, sending unthrottled at 1/s",
                        extra={"lane": lane})
            self._sleep(1.0)
            return True
        if waited == BLOCKED:
            return False
        if waited > 0:
            self._count(lane, "wait_ms", int(waited * 1000))
        return True

    def _take_within(self, chat_id: Any, lane: str, method: str, max_wait: float) -> float:
        started = time.monotonic()
        deadline = started + max_wait
        while True:
            wait_ms = self.limiter.try_acquire(chat_id, lane)
            if wait_ms == BLOCKED:
                return BLOCKED
            if wait_ms == 0:
                return time.monotonic() - started
            if time.monotonic() + wait_ms / 1000 > deadline:
                raise NotYet(method, chat_id, wait_ms / 1000)
            self._sleep(wait_ms / 1000)

    def _on_rate_limited(self, method: str, chat_id: Any, lane: str,
                         error: TelegramError) -> None:
        retry_after = error.retry_after if error.retry_after is not None else 1.0
        log.warning("Telegram 429", extra={"method": method, "chat_id": chat_id, "lane": lane,
                                           "retry_after": retry_after})
        self._count(lane, "rate_limited")
        try:
            self.limiter.pause(retry_after)
        except redis.RedisError:
            self._sleep(retry_after)

    def _give_up(self, method: str, chat_id: Any, lane: str, error: TelegramError,
                 response: Response | None) -> Response:
        self._count(lane, "failed_transient")
        log.error("telegram call failed after retries", extra={
            "method": method, "chat_id": chat_id, "lane": lane, "code": error.code,
            "description": error.description})
        if self.on_unreachable is not None and lane != ALERT and not error.rate_limited:
            try:
                self.on_unreachable(f"{method}: {error.code} {error.description}"[:200])
            except Exception:
                log.exception("unreachable callback failed")
        if response is None:
            raise error
        return response

    def _mark_blocked(self, chat_id: Any, lane: str, error: TelegramError) -> None:
        self._count(lane, "blocked")
        log.info("user blocked the bot", extra={"chat_id": chat_id,
                                                "description": error.description})
        try:
            self._redis.set(f"{BLOCKED_PREFIX}{chat_id}", "1", ex=BLOCKED_TTL)
        except redis.RedisError:
            pass
        if self._on_blocked is not None:
            try:
                self._on_blocked(int(chat_id))
            except Exception:
                log.exception("could not store the blocked flag", extra={"chat_id": chat_id})

    def _count(self, lane: str, what: str, amount: int = 1) -> None:
        if lane == BULK and what in BUFFERED:
            with self._pending_lock:
                field = f"{lane}:{what}"
                self._pending[field] = self._pending.get(field, 0) + amount
            if time.monotonic() - self._flushed_at >= COUNTER_FLUSH_SECONDS:
                self.flush_counters()
            return
        try:
            self._redis.hincrby(METRICS_KEY, f"{lane}:{what}", amount)
        except redis.RedisError:
            pass

    def flush_counters(self) -> None:
        """Write the added-up bulk counters (one pipelined round trip)."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
            self._flushed_at = time.monotonic()
        if not pending:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for field, amount in pending.items():
                pipe.hincrby(METRICS_KEY, field, amount)
            pipe.execute()
        except redis.RedisError:
            log.warning("could not write the sender counters", extra={"fields": len(pending)})


def metrics(conn: redis.Redis) -> dict[str, int]:
    """Counters of every process: {"bulk:sent": 9000, "interactive:rate_limited": 0, …}."""
    raw = conn.hgetall(METRICS_KEY)
    return {k.decode(): int(v) for k, v in raw.items()}  # type: ignore[union-attr]

