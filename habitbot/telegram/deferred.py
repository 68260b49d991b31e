"""Replies kept for later, per chat, and delivered in order: while Telegram is unreachable,
and while the chat's own send slot (about 1 message a second per chat) is not due yet.

An update is handled once (`bot.intake`), so a reply that fails because Telegram cannot be
reached (network error, timeout, 5xx — after the sender's own retries) would be lost: running
the handler again is no way out (handlers change data). `DeferredReplies` keeps such a call —
method, parameters, files — in a Redis list per chat, and its thread delivers the lists with
backoff once Telegram answers again:

- a chat's replies go out in the order they were made: while a chat has replies waiting, its
  new ones join the end of its list instead of overtaking them;
- while Telegram is known to be unreachable (a reply was kept and nothing delivered since),
  every chat's new replies are kept at once instead of each waiting out the sender's retries
  in its update's thread, so other chats' updates are not held up;
- chats are independent: a reply Telegram refuses is dropped and never holds a list up;
- a reply older than `max_age` (10 minutes) is dropped, with a WARNING saying how many;
- the lists live in Redis: a bot restarted meanwhile delivers them.

A reply whose chat has no send slot within `PARK_AFTER` (the chat already had its burst, or
everyone waits out a 429) is parked the same way instead of waiting in its update's thread:
the thread goes on to other chats' updates at once, and the delivering thread sends the
chat's replies as its slots come, chat by chat — a chat waiting for its slot holds up no
other chat's replies. So four users typing non-stop cannot hold the bot's threads.

Refusals (400, 403, …) are never kept: sending them again cannot succeed. With Redis down as
well the reply cannot be kept: it is logged as lost and the caller gets the failure, as
without this module (a reply that only waited for its slot is then sent after the wait).
Delivery is at least once: a crash between Telegram's answer and the removal from the list
sends that reply again.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from habitbot.http_sessions import Response
from habitbot.redis_client import KEY_PREFIX
from habitbot.telegram.errors import TelegramError
from habitbot.telegram.limiter import INTERACTIVE
from habitbot.telegram.sender import NotYet, Sender, error_of

log = logging.getLogger(__name__)

# What a handler answers with; other calls (callback and pre-checkout answers, which expire
# within seconds, getUpdates, getFile) are not worth keeping.
DEFERRABLE = frozenset(m.lower() for m in (
    "sendMessage", "sendPhoto", "sendDocument", "sendInvoice", "editMessageText",
    "editMessageCaption", "editMessageReplyMarkup"))
# A send slot further away than this parks the reply (the global 30/s bucket alone never
# makes anyone wait that long; a chat's 1/s slot and a 429 pause do).
PARK_AFTER = 0.1
SLOT_RECHECK_MIN = 0.02
MAX_AGE_SECONDS = 600.0
MAX_KEPT_BYTES = 8 * 1024 * 1024  # one reply, files included (an export, a heatmap)
KEY_TTL_SECONDS = 24 * 3600  # a safety net only: old replies are dropped (and logged) before
RETRY_BASE = 1.0
RETRY_CAP = 30.0
IDLE_RECHECK = 60.0
CHATS_PER_PASS = 100

_PREFIX = f"{KEY_PREFIX}replies:"
INDEX_KEY = f"{_PREFIX}chats"  # chats with replies waiting, scored by the first one's time

_ENQUEUE = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[3])
return redis.call('LLEN', KEYS[1])
"""
# Remove the head the drainer has just handled (if it still is the head) and forget the chat
# once its list is empty — atomically, so a reply kept meanwhile is never orphaned.
_ACK = """
if ARGV[1] ~= '' and redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then
  redis.call('LPOP', KEYS[1])
end
local left = redis.call('LLEN', KEYS[1])
if left == 0 then redis.call('ZREM', KEYS[2], ARGV[2]) end
return left
"""

DELIVERED, REFUSED, STALLED, NOT_YET = "delivered", "refused", "stalled", "not_yet"


def waiting_replies(conn: redis.Redis) -> int:
    """How many replies wait for Telegram, all chats together (`habitbot status`)."""
    chats = [c.decode() for c in  # type: ignore[union-attr]
             conn.zrange(INDEX_KEY, 0, -1)]
    if not chats:
        return 0
    pipe = conn.pipeline(transaction=False)
    for chat in chats:
        pipe.llen(_list_key(chat))
    return sum(int(n) for n in pipe.execute())


def _list_key(chat: str) -> str:
    return f"{_PREFIX}chat:{chat}"


def _chat(chat_id: Any) -> str:
    return str(chat_id)


def _pack(files: dict[str, Any] | None) -> dict[str, list[str | None]] | None:
    """Files as telebot hands them over — (name, bytes) or bytes — in JSON; TypeError for
    anything else (an open file, a stream)."""
    if not files:
        return None
    packed: dict[str, list[str | None]] = {}
    for field, value in files.items():
        name, content = value if isinstance(value, tuple) and len(value) == 2 else (None, value)
        if isinstance(content, str):
            content = content.encode()
        if not isinstance(content, bytes) or not (name is None or isinstance(name, str)):
            raise TypeError(f"file {field!r} cannot be kept")
        packed[field] = [name, base64.b64encode(content).decode()]
    return packed


def _unpack(packed: dict[str, list[str | None]] | None) -> dict[str, Any] | None:
    if not packed:
        return None
    files: dict[str, Any] = {}
    for field, (name, content) in packed.items():
        data = base64.b64decode(content or "")
        files[field] = data if name is None else (name, data)
    return files


@dataclass
class DrainResult:
    delivered: int = 0
    refused: int = 0   # Telegram refused them (400, 403 …): dropped
    dropped: int = 0   # older than max_age: dropped
    stalled: bool = False  # Telegram still unreachable: the rest waits for the next pass
    next_slot: float | None = None  # seconds until the first chat passed over has its slot


class DeferredReplies:
    def __init__(self, sender: Sender, conn: redis.Redis, max_age: float = MAX_AGE_SECONDS):
        self._sender = sender
        self._redis = conn
        self.max_age = max_age
        self._enqueue = conn.register_script(_ENQUEUE)
        self._ack_script = conn.register_script(_ACK)
        self._unreachable = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the sending side ------------------------------------------------------------------------
    def send(self, method: str, params: dict[str, Any] | None = None, *,
             files: dict[str, Any] | None = None,
             read_timeout: float | None = None) -> Response | None:
        """Perform the call through the sender, or keep it for later: None means kept (the
        caller treats the reply as sent). Errors other than "unreachable" are the caller's."""
        chat_id = (params or {}).get("chat_id")
        if method.lower() not in DEFERRABLE or chat_id is None:
            return self._sender.perform(method, params, files=files, lane=INTERACTIVE,
                                        read_timeout=read_timeout)
        assert params is not None
        if self._unreachable.is_set():
            if self._keep(method, params, files, "Telegram unreachable"):
                return None
        elif self._waiting(chat_id) and self._keep(method, params, files,
                                                   "earlier replies to this chat wait"):
            return None
        try:
            try:
                response = self._sender.perform(method, params, files=files, lane=INTERACTIVE,
                                                read_timeout=read_timeout, max_wait=PARK_AFTER)
            except NotYet as exc:
                if self._keep(method, params, files, "the chat's send slot", parked=exc.wait):
                    return None
                # Not kept (Redis refused it): wait for the slot here, as without parking.
                response = self._sender.perform(method, params, files=files, lane=INTERACTIVE,
                                                read_timeout=read_timeout)
        except TelegramError as exc:
            if exc.unreachable and self._keep_after_failure(method, params, files, exc):
                return None
            raise
        error = error_of(method, response)
        if error is not None and error.unreachable and \
                self._keep_after_failure(method, params, files, error):
            return None
        return response

    def _keep_after_failure(self, method: str, params: dict[str, Any],
                            files: dict[str, Any] | None, error: TelegramError) -> bool:
        self._unreachable.set()
        return self._keep(method, params, files, f"{error.code} {error.description}"[:200])

    def _waiting(self, chat_id: Any) -> bool:
        try:
            return bool(self._redis.exists(_list_key(_chat(chat_id))))
        except redis.RedisError:
            return False

    def _keep(self, method: str, params: dict[str, Any], files: dict[str, Any] | None,
              reason: str, parked: float | None = None) -> bool:
        """Keep a reply at the end of its chat's list; `parked`: the seconds until the chat's
        send slot (an ordinary event, logged at DEBUG; keeping for an outage is a WARNING)."""
        chat = _chat(params["chat_id"])
        context = {"method": method, "chat_id": chat}
        try:
            entry = json.dumps({"id": uuid.uuid4().hex[:12], "method": method, "params": params,
                                "files": _pack(files), "at": time.time()}, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            log.error("reply lost: it cannot be kept for later", extra={**context,
                                                                        "error": str(exc)})
            return False
        if len(entry) > MAX_KEPT_BYTES:
            log.error("reply lost: too large to keep for later",
                      extra={**context, "bytes": len(entry)})
            return False
        try:
            waiting = int(self._enqueue(keys=[_list_key(chat), INDEX_KEY],
                                        args=[entry, time.time(), chat, KEY_TTL_SECONDS]))
        except redis.RedisError as exc:
            log.error("reply lost: Telegram and Redis both unavailable",
                      extra={**context, "error": type(exc).__name__})
            return False
        if parked is None:
            log.warning("reply deferred until Telegram answers again",
                        extra={**context, "reason": reason, "waiting_in_chat": waiting})
        else:
            log.debug("reply parked until the chat's send slot",
                      extra={**context, "slot_in": round(parked, 3), "waiting_in_chat": waiting})
        self._wake.set()
        return True

    # -- the delivering side ---------------------------------------------------------------------
    def waiting(self) -> int:
        """How many replies wait, all chats together."""
        return waiting_replies(self._redis)

    def drain_once(self, now: float | None = None) -> DrainResult:
        """One pass over the waiting chats, oldest first: each chat's replies while its send
        slots are due (a chat whose slot is not due is passed over); stops at the first reply
        Telegram still cannot take. Raises redis.RedisError."""
        result = DrainResult()
        chats = [c.decode() for c in  # type: ignore[union-attr]
                 self._redis.zrange(INDEX_KEY, 0, CHATS_PER_PASS - 1)]
        for chat in chats:
            if self._stopping.is_set() or result.stalled:
                break
            self._drain_chat(chat, result, time.time() if now is None else now)
        if not result.stalled:
            self._unreachable.clear()
        if result.delivered:
            log.info("deferred replies delivered: %d", result.delivered,
                     extra={"delivered": result.delivered, "refused": result.refused,
                            "still_waiting": result.stalled})
        return result

    def _drain_chat(self, chat: str, result: DrainResult, now: float) -> None:
        key, dropped = _list_key(chat), 0
        while not self._stopping.is_set():
            raw = self._redis.lindex(key, 0)
            if raw is None:
                self._ack(chat, None)
                break
            outcome, slot_in = self._handle(raw, now)  # type: ignore[arg-type]
            if outcome == STALLED:
                result.stalled = True
                break
            if outcome == NOT_YET:
                result.next_slot = min(slot_in, result.next_slot or slot_in)
                break
            self._ack(chat, raw)  # type: ignore[arg-type]
            if outcome == DELIVERED:
                result.delivered += 1
            elif outcome == REFUSED:
                result.refused += 1
            else:
                dropped += 1
        if dropped:
            result.dropped += dropped
            log.warning("deferred replies dropped: %d", dropped, extra={
                "dropped": dropped, "chat_id": chat, "max_age_seconds": self.max_age})

    def _handle(self, raw: bytes, now: float) -> tuple[str, float]:
        """Deliver one kept reply: DELIVERED, REFUSED, STALLED, "expired", or NOT_YET with
        the seconds until the chat's slot."""
        try:
            entry = json.loads(raw)
            method, params, at = entry["method"], entry["params"], float(entry["at"])
            files = _unpack(entry.get("files"))
        except (ValueError, KeyError, TypeError):
            log.error("unreadable deferred reply dropped")
            return REFUSED, 0.0
        if now - at > self.max_age:
            return "expired", 0.0
        try:
            error = error_of(method, self._sender.perform(method, params, files=files,
                                                          lane=INTERACTIVE,
                                                          max_wait=PARK_AFTER))
        except NotYet as exc:
            return NOT_YET, exc.wait
        except TelegramError as exc:
            error = exc
        if error is None:
            return DELIVERED, 0.0
        if error.unreachable or error.rate_limited or error.unauthorized:
            return STALLED, 0.0  # nothing wrong with the reply: Telegram cannot take it yet
        return REFUSED, 0.0  # the sender has logged the refusal

    def _ack(self, chat: str, raw: bytes | None) -> None:
        self._ack_script(keys=[_list_key(chat), INDEX_KEY], args=[raw or b"", chat])

    # -- the thread ------------------------------------------------------------------------------
    def start(self) -> DeferredReplies:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="deferred-replies", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop delivering; what still waits stays in Redis for the next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            more, next_slot = False, None
            try:
                result = self.drain_once()
                stalled, next_slot = result.stalled, result.next_slot
                more = not stalled and next_slot is None and \
                    bool(self._redis.zcard(INDEX_KEY))  # past one pass
            except redis.RedisError as exc:
                log.warning("deferred replies not delivered: redis unavailable",
                            extra={"error": type(exc).__name__})
                stalled = True
            except Exception:
                log.exception("deferred replies pass failed")
                stalled = True
            if stalled:
                failures += 1
                # New replies kept meanwhile do not cut the backoff short.
                self._stopping.wait(min(RETRY_CAP, RETRY_BASE * 2 ** (failures - 1))
                                    * random.uniform(0.5, 1.0))
                continue
            failures = 0
            if next_slot is not None:  # replies wait for their chats' slots
                self._stopping.wait(max(SLOT_RECHECK_MIN, min(next_slot, 1.0)))
            elif not more:
                self._wake.wait(IDLE_RECHECK)
            self._wake.clear()
