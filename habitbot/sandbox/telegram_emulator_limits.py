"""Flood limits, injected faults and counters of the Telegram Bot API emulator.

Every class here guards its own state with its own lock, held only for a few arithmetic
operations, so hundreds of concurrent senders do not serialise on the emulator's main state.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

PAID_BROADCAST_RATE = 1000.0
FAULT_MODES = ("5xx", "timeout", "outage", "401", "429")
STATUS_TEXT = {
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class TokenBucket:
    """Classic token bucket; a rate of 0 or less means unlimited. Not thread-safe by itself."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, now: float) -> float:
        """Seconds until one token is available (0 when one is available now)."""
        if self.rate <= 0:
            return 0.0
        self.refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        if self.rate > 0:
            self.tokens -= 1.0

    def reconfigure(self, rate: float, burst: float, now: float) -> None:
        """Change rate and burst; a larger bucket is topped up by the added capacity."""
        self.refill(now)
        self.rate = rate
        burst = max(burst, 1.0)
        self.tokens = min(self.tokens + max(burst - self.burst, 0.0), burst)
        self.burst = burst


class SendLimiter:
    """Global, paid-broadcast and per-chat buckets of one bot."""

    def __init__(self, global_rate: float, chat_rate: float, chat_burst: float) -> None:
        now = time.monotonic()
        self._lock = threading.Lock()
        self.global_rate = global_rate
        self.chat_rate = chat_rate
        self.chat_burst = chat_burst
        self._global = TokenBucket(global_rate, global_rate, now)
        self._paid = TokenBucket(PAID_BROADCAST_RATE, PAID_BROADCAST_RATE, now)
        self._chats: dict[int, TokenBucket] = {}

    def acquire(self, chat_id: int, paid: bool = False, chat_only: bool = False) -> float:
        """Take a token from the chat bucket and (unless ``chat_only``) the global one.

        Returns 0.0 on success, otherwise the seconds to wait; nothing is consumed then.
        """
        now = time.monotonic()
        with self._lock:
            chat = self._chats.get(chat_id)
            if chat is None:
                chat = self._chats[chat_id] = TokenBucket(self.chat_rate, self.chat_burst, now)
            buckets = [chat] if chat_only else [chat, self._paid if paid else self._global]
            wait = max(bucket.wait_time(now) for bucket in buckets)
            if wait > 0:
                return wait
            for bucket in buckets:
                bucket.take()
            return 0.0

    def configure(
        self,
        global_rate: float | None = None,
        chat_rate: float | None = None,
        chat_burst: float | None = None,
    ) -> None:
        now = time.monotonic()
        with self._lock:
            if global_rate is not None:
                self.global_rate = global_rate
                self._global.reconfigure(global_rate, global_rate, now)
            if chat_rate is not None:
                self.chat_rate = chat_rate
            if chat_burst is not None:
                self.chat_burst = chat_burst
            for bucket in self._chats.values():
                bucket.reconfigure(self.chat_rate, self.chat_burst, now)

    def reset(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._chats.clear()
            self._global = TokenBucket(self.global_rate, self.global_rate, now)
            self._paid = TokenBucket(PAID_BROADCAST_RATE, PAID_BROADCAST_RATE, now)

    def settings(self) -> dict[str, float]:
        return {
            "global_rate": self.global_rate,
            "chat_rate": self.chat_rate,
            "chat_burst": self.chat_burst,
            "paid_broadcast_rate": PAID_BROADCAST_RATE,
        }


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))


@dataclass
class Fault:
    """One injected failure of the Bot API side."""

    fault_id: int
    mode: str
    methods: frozenset[str] | None
    remaining: int | None
    until: float | None
    status: int
    retry_after: int
    released: threading.Event = field(default_factory=threading.Event)
    hits: int = 0

    def active(self, now: float) -> bool:
        if self.released.is_set():
            return False
        if self.remaining is not None and self.remaining <= 0:
            return False
        return self.until is None or now < self.until

    def matches(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.fault_id,
            "mode": self.mode,
            "methods": sorted(self.methods) if self.methods is not None else None,
            "remaining": self.remaining,
            "seconds_left": None if self.until is None else max(0.0, self.until - time.time()),
            "status": self.status,
            "retry_after": self.retry_after,
            "hits": self.hits,
        }

    def hold_seconds(self, hold_max: float) -> float:
        """How long a ``timeout`` fault keeps a request open before closing it."""
        if self.until is None:
            return hold_max
        return max(0.0, min(hold_max, self.until - time.time()))


class FaultBook:
    """The list of injected faults; the first active one matching a method wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(
        self,
        mode: str,
        methods: list[str] | None = None,
        count: int | None = None,
        seconds: float | None = None,
        status: int | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {FAULT_MODES}")
        if status is None:
            status = {"5xx": 502, "401": 401, "429": 429}.get(mode, 0)
        if mode == "5xx" and not 500 <= status <= 599:
            raise ValueError("status of a 5xx fault must be within 500..599")
        with self._lock:
            fault = Fault(
                fault_id=self._next_id,
                mode=mode,
                methods=frozenset(m.lower() for m in methods) if methods else None,
                remaining=count,
                until=time.time() + seconds if seconds is not None else None,
                status=status,
                retry_after=max(1, int(retry_after if retry_after is not None else 5)),
            )
            self._next_id += 1
            self._faults.append(fault)
        return fault

    def take(self, method: str) -> Fault | None:
        """Return the fault to apply to this call (consuming one of its count), if any."""
        if not self._faults:
            return None
        now = time.time()
        with self._lock:
            for fault in self._faults:
                if fault.active(now) and fault.matches(method):
                    fault.hits += 1
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    def clear(self) -> int:
        with self._lock:
            faults, self._faults = self._faults, []
        for fault in faults:
            fault.released.set()
        return len(faults)

    def describe(self) -> list[dict[str, Any]]:
        now = time.time()
        with self._lock:
            return [f.describe() for f in self._faults if f.active(now)]


class Stats:
    """Request, send and error counters, plus the server time of every successful send."""

    def __init__(self, send_log_limit: int = 200_000) -> None:
        self._lock = threading.Lock()
        self._limit = send_log_limit
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests: Counter[str] = Counter()
            self.errors: Counter[int] = Counter()
            self.faults: Counter[str] = Counter()
            self.sent_per_chat: Counter[int] = Counter()
            self.sent = 0
            self.edits = 0
            self.rate_limited = 0
            self.first_send_ts: float | None = None
            self.last_send_ts: float | None = None
            self.send_log: deque[tuple[float, int, str, int]] = deque(maxlen=self._limit)

    def request(self, method: str) -> None:
        with self._lock:
            self.requests[method] += 1

    def error(self, code: int) -> None:
        with self._lock:
            self.errors[code] += 1
            if code == 429:
                self.rate_limited += 1

    def fault(self, mode: str) -> None:
        with self._lock:
            self.faults[mode] += 1

    def edit(self) -> None:
        with self._lock:
            self.edits += 1

    def send(self, chat_id: int, method: str, message_id: int, ts: float) -> None:
        with self._lock:
            self.sent += 1
            self.sent_per_chat[chat_id] += 1
            if self.first_send_ts is None:
                self.first_send_ts = ts
            self.last_send_ts = ts
            self.send_log.append((ts, chat_id, method, message_id))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            log = list(self.send_log)
            result = {
                "requests": dict(self.requests),
                "sent": self.sent,
                "edits": self.edits,
                "sent_per_chat": {str(k): v for k, v in self.sent_per_chat.items()},
                "rate_limited": self.rate_limited,
                "errors": {str(k): v for k, v in self.errors.items()},
                "faults": dict(self.faults),
                "first_send_ts": self.first_send_ts,
                "last_send_ts": self.last_send_ts,
            }
        result["max_sent_in_1s"] = max_in_window([t for t, *_ in log], 1.0)
        result["max_sent_per_chat_in_1s"] = _max_per_chat(log)
        return result

    def sends(self, since: float | None = None, chat_id: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            log = list(self.send_log)
        return [
            {"ts": ts, "chat_id": chat, "method": method, "message_id": message_id}
            for ts, chat, method, message_id in log
            if (since is None or ts >= since) and (chat_id is None or chat == chat_id)
        ]


def max_in_window(stamps: list[float], window: float) -> int:
    """Largest number of timestamps inside any window of ``window`` seconds."""
    best, start = 0, 0
    ordered = sorted(stamps)
    for end, stamp in enumerate(ordered):
        while stamp - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _max_per_chat(log: list[tuple[float, int, str, int]]) -> int:
    per_chat: dict[int, list[float]] = {}
    for ts, chat, _, _ in log:
        per_chat.setdefault(chat, []).append(ts)
    return max((max_in_window(stamps, 1.0) for stamps in per_chat.values()), default=0)
