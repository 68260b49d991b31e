"""Webhook deliveries of the payment emulators: POST, record every attempt, retry on failure.

Providers retry a notification until the receiver answers 2xx (YooKassa for 24 hours, Crypto Pay
for days); here the schedule is short and configurable (``retry_delays``, seconds after each
failed attempt). Every attempt is recorded with its HTTP status or connection error so tests and
the control API can see exactly what the receiver answered. ``copies`` with ``concurrent=True``
sends the same bytes several times at once, released together by a barrier, which is how a
provider's duplicate deliveries race each other in real life.

Deliveries leave from ``source_address`` when given (any 127.x.y.z address works on Linux
loopback), otherwise from the address the OS picks: 127.0.0.1 for a receiver on localhost.
"""

from __future__ import annotations

import heapq
import http.client
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("habitbot.sandbox.payments_emulator")

MAX_BURST = 200
UNSET: Any = object()


@dataclass
class Attempt:
    number: int
    started_at: float
    status: int | None
    error: str | None
    elapsed: float

    def describe(self) -> dict[str, Any]:
        return {"attempt": self.number, "at": self.started_at, "status": self.status,
                "error": self.error, "elapsed": round(self.elapsed, 4)}


@dataclass
class Delivery:
    delivery_id: int
    event: str
    object_id: str
    body: bytes
    headers: dict[str, str]
    created_at: float
    tag: dict[str, Any] = field(default_factory=dict)
    url: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    state: str = "pending"
    next_at: float | None = None
    generation: int = 0
    reason: str | None = None

    def describe(self) -> dict[str, Any]:
        try:
            payload: Any = json.loads(self.body)
        except ValueError:
            payload = self.body.decode("utf-8", "replace")
        return {"id": self.delivery_id, "event": self.event, "object_id": self.object_id,
                "url": self.url, "state": self.state, "created_at": self.created_at,
                "next_attempt_at": self.next_at,
                "attempts": [attempt.describe() for attempt in self.attempts],
                "statuses": [attempt.status for attempt in self.attempts],
                "reason": self.reason, "headers": dict(self.headers), "body": payload,
                **self.tag}


class WebhookSender:
    """Queue, workers and history of webhook deliveries; thread-safe."""

    def __init__(self, url: str | None, retry_delays: Sequence[float] = (0.5, 1.0, 2.0),
                 timeout: float = 5.0, source_address: str | None = None, workers: int = 8,
                 user_agent: str = "payments emulator") -> None:
        self.url = url
        self.enabled = True
        self.retry_delays = tuple(float(d) for d in retry_delays)
        self.timeout = timeout
        self.source_address = source_address
        self.user_agent = user_agent
        self._workers = workers
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: list[tuple[float, int, Delivery]] = []
        self._deliveries: list[Delivery] = []
        self._seq = 0
        self._next_id = 1
        self._generation = 0
        self.version = 0
        self._threads: list[threading.Thread] = []
        self._bursts: list[threading.Thread] = []
        self._stopping = threading.Event()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stopping.clear()
        self._threads = [threading.Thread(target=self._work, name=f"webhook-{n}", daemon=True)
                         for n in range(self._workers)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop sending; attempts in flight finish (bounded by ``timeout``), retries are dropped."""
        self._stopping.set()
        with self._lock:
            self._changed.notify_all()
            bursts = list(self._bursts)
        for thread in self._threads + bursts:
            thread.join(timeout=self.timeout + 1)
        self._threads = []
        with self._lock:
            self._bursts = []

    # ------------------------------------------------------------ settings

    def configure(self, url: str | None = UNSET, enabled: bool | None = None,
                  retry_delays: Sequence[float] | None = None, timeout: float | None = None,
                  source_address: str | None = UNSET) -> None:
        if retry_delays is not None and any(float(d) < 0 for d in retry_delays):
            raise ValueError("retry delays must not be negative")
        if timeout is not None and float(timeout) <= 0:
            raise ValueError("timeout must be positive")
        with self._lock:
            if url is not UNSET:
                self.url = url or None
            if enabled is not None:
                self.enabled = bool(enabled)
            if retry_delays is not None:
                self.retry_delays = tuple(float(d) for d in retry_delays)
            if timeout is not None:
                self.timeout = float(timeout)
            if source_address is not UNSET:
                self.source_address = source_address or None

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return {"url": self.url, "enabled": self.enabled,
                    "retry_delays": list(self.retry_delays), "timeout": self.timeout,
                    "source_address": self.source_address or "127.0.0.1 (OS default)"}

    # ------------------------------------------------------------ sending

    def submit(self, event: str, object_id: str, body: bytes, headers: dict[str, str],
               copies: int = 1, concurrent: bool = False,
               tag: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Queue ``copies`` deliveries of the same bytes; returns their descriptions."""
        if not 1 <= copies <= MAX_BURST:
            raise ValueError(f"copies must be within 1..{MAX_BURST}")
        with self._lock:
            url = self.url if self.enabled else None
            deliveries = []
            for _ in range(copies):
                delivery = Delivery(self._next_id, event, object_id, body, dict(headers),
                                    time.time(), dict(tag or {}), url,
                                    generation=self._generation)
                self._next_id += 1
                self._deliveries.append(delivery)
                deliveries.append(delivery)
                if url is None:
                    delivery.state = "skipped"
                    delivery.reason = ("webhooks disabled" if not self.enabled
                                       else "no webhook URL configured")
                elif not (concurrent and copies > 1):
                    self._push(delivery, 0.0)
            if url is not None and concurrent and copies > 1:
                self._burst(deliveries)
            self._bump()
            return [delivery.describe() for delivery in deliveries]

    def _push(self, delivery: Delivery, delay: float) -> None:
        """Schedule an attempt (caller holds the lock)."""
        self._seq += 1
        delivery.next_at = time.time() + delay
        heapq.heappush(self._queue, (time.monotonic() + delay, self._seq, delivery))
        self._changed.notify_all()

    def _burst(self, deliveries: list[Delivery]) -> None:
        """Fire all ``deliveries`` at the same moment from their own threads (lock held)."""
        barrier = threading.Barrier(len(deliveries))

        def fire(delivery: Delivery) -> None:
            try:
                barrier.wait(timeout=5)
            except threading.BrokenBarrierError:
                pass
            self._attempt(delivery)

        self._bursts = [t for t in self._bursts if t.is_alive()]
        for delivery in deliveries:
            thread = threading.Thread(target=fire, args=(delivery,), daemon=True,
                                      name=f"webhook-burst-{delivery.delivery_id}")
            self._bursts.append(thread)
            thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._stopping.is_set():
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        break
                    self._changed.wait(self._queue[0][0] - now if self._queue else None)
                if self._stopping.is_set():
                    return
                delivery = heapq.heappop(self._queue)[2]
            self._attempt(delivery)

    def _attempt(self, delivery: Delivery) -> None:
        if self._stopping.is_set() or delivery.url is None:
            return
        started, clock = time.time(), time.monotonic()
        status, error = self._post(delivery.url, delivery.body, delivery.headers)
        with self._lock:
            number = len(delivery.attempts) + 1
            delivery.attempts.append(Attempt(number, started, status, error,
                                             time.monotonic() - clock))
            if delivery.generation != self._generation:
                delivery.state, delivery.next_at = "dropped", None
            elif status is not None and 200 <= status < 300:
                delivery.state, delivery.next_at = "delivered", None
            elif number <= len(self.retry_delays) and not self._stopping.is_set():
                self._push(delivery, self.retry_delays[number - 1])
            else:
                delivery.state, delivery.next_at = "failed", None
            self._bump()
        log.info("webhook %s %s attempt %d -> %s", delivery.event, delivery.object_id, number,
                 status if status is not None else error)

    def _post(self, url: str, body: bytes,
              headers: dict[str, str]) -> tuple[int | None, str | None]:
        parts = urlsplit(url)
        source = (self.source_address, 0) if self.source_address else None
        connection_class = (http.client.HTTPSConnection if parts.scheme == "https"
                            else http.client.HTTPConnection)
        connection = connection_class(parts.hostname or "127.0.0.1", parts.port,
                                      timeout=self.timeout, source_address=source)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("POST", target, body, {
                "User-Agent": self.user_agent, "Connection": "close", **headers})
            response = connection.getresponse()
            response.read()
            return response.status, None
        except TimeoutError:
            return None, "timeout"
        except (OSError, http.client.HTTPException) as exc:
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()

    # ------------------------------------------------------------ inspection

    def _bump(self) -> None:
        self.version += 1
        self._changed.notify_all()

    def wait_change(self, version: int, timeout: float) -> int:
        """Wait until anything changes after ``version`` (or ``timeout``); returns the version."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            while self.version <= version and not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self.version

    def deliveries(self, object_id: str | None = None,
                   event: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [d.describe() for d in self._deliveries
                    if (object_id is None or d.object_id == str(object_id))
                    and (event is None or d.event == event)]

    def last(self, object_id: str, event: str | None = None) -> Delivery | None:
        with self._lock:
            for delivery in reversed(self._deliveries):
                if delivery.object_id == object_id and (event is None or delivery.event == event):
                    return delivery
        return None

    def reset(self) -> None:
        with self._lock:
            self._generation += 1
            self._queue.clear()
            self._deliveries.clear()
            self._bump()
