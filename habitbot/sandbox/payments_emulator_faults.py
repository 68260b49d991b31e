"""Injected API faults and the request log of the payment emulators.

Fault modes: ``5xx`` (an error answer: the provider's JSON for 500, a proxy's HTML page for
502/503/504), ``429`` (with ``Retry-After``), ``timeout`` (the request is held open, then the
connection closes unanswered) and ``outage`` (the connection is reset). A fault applies to
some endpoints or all, for ``count`` calls or ``seconds``, before the call is processed or,
with ``after``, once it has been (the state changed, the answer is lost).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

FAULT_MODES = ("5xx", "timeout", "outage", "429")


# ---------------------------------------------------------------- faults


@dataclass
class Fault:
    """One injected failure of the provider's API (not of the webhook receiver)."""

    fault_id: int
    mode: str
    endpoints: frozenset[str] | None
    remaining: int | None
    until: float | None
    status: int
    after: bool
    retry_after: int
    released: threading.Event = field(default_factory=threading.Event)
    hits: int = 0

    def active(self, now: float) -> bool:
        if self.released.is_set() or (self.remaining is not None and self.remaining <= 0):
            return False
        return self.until is None or now < self.until

    def describe(self) -> dict[str, Any]:
        left = None if self.until is None else max(0.0, self.until - time.monotonic())
        return {"id": self.fault_id, "mode": self.mode,
                "endpoints": sorted(self.endpoints) if self.endpoints is not None else None,
                "remaining": self.remaining, "seconds_left": left, "status": self.status,
                "after": self.after, "retry_after": self.retry_after, "hits": self.hits}

    def hold_seconds(self, hold_max: float) -> float:
        """How long a ``timeout`` fault keeps a request open before closing it unanswered."""
        if self.until is None:
            return hold_max
        return max(0.0, min(hold_max, self.until - time.monotonic()))


class FaultBook:
    """Injected faults; the first active one matching an endpoint and phase wins.

    ``after=True`` faults strike once the request has been processed: the payment exists, the
    answer is lost (a 5xx, a hang or a reset), exactly the case idempotence keys are for.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(self, mode: str, endpoints: Iterable[str] | None = None, count: int | None = None,
            seconds: float | None = None, status: int | None = None, after: bool = False,
            retry_after: int | None = None) -> Fault:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {FAULT_MODES}")
        if status is None:
            status = {"5xx": 500, "429": 429}.get(mode, 0)
        status = int(status)
        if mode == "5xx" and not 500 <= status <= 599:
            raise ValueError("status of a 5xx fault must be within 500..599")
        if count is not None and int(count) < 1:
            raise ValueError("count must be at least 1")
        if seconds is not None and float(seconds) <= 0:
            raise ValueError("seconds must be positive")
        with self._lock:
            fault = Fault(
                fault_id=self._next_id, mode=mode,
                endpoints=frozenset(e.lower() for e in endpoints) if endpoints else None,
                remaining=None if count is None else int(count),
                until=None if seconds is None else time.monotonic() + float(seconds),
                status=status, after=bool(after),
                retry_after=max(1, int(retry_after if retry_after is not None else 1)),
            )
            self._next_id += 1
            self._faults.append(fault)
        return fault

    def take(self, endpoint: str, after: bool) -> Fault | None:
        """The fault to apply to this call now (consuming one of its count), if any."""
        if not self._faults:
            return None
        now = time.monotonic()
        endpoint = endpoint.lower()
        with self._lock:
            for fault in self._faults:
                if (fault.after == after and fault.active(now)
                        and (fault.endpoints is None or endpoint in fault.endpoints)):
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
        now = time.monotonic()
        with self._lock:
            return [fault.describe() for fault in self._faults if fault.active(now)]


# ---------------------------------------------------------------- request log


class RequestLog:
    """The API calls the emulator answered, newest last (what the app asked, and when)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self._next_id = 1

    def record(self, **entry: Any) -> dict[str, Any]:
        with self._lock:
            entry = {"id": self._next_id, "ts": time.time(), **entry}
            self._next_id += 1
            self._entries.append(entry)
            return entry

    def update(self, entry_id: int, **fields: Any) -> None:
        with self._lock:
            for entry in reversed(self._entries):
                if entry["id"] == entry_id:
                    entry.update(fields)
                    return

    def entries(self, endpoint: str | None = None, since_id: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._entries
                    if e["id"] > since_id and (endpoint is None or e.get("endpoint") == endpoint)]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
