"""The skeleton of the payment emulators: lifecycle, control API routing, shared operations.

Each emulator is an :class:`EmulatorBase` subclass that turns one :class:`HttpRequest` into one
:class:`HttpResponse` (``handle_api``) and applies its time-based transitions (``sweep``, run by
the housekeeping thread and after the clock is advanced). The JSON control API under
``/control/`` is a table of routes; those every emulator shares (faults, deliveries, webhook
settings, request log, clock, reset) are defined here.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from habitbot.sandbox.payments_emulator_faults import Fault, FaultBook, RequestLog
from habitbot.sandbox.payments_emulator_http import (
    HttpRequest,
    HttpResponse,
    PaymentsHTTPServer,
    json_response,
)
from habitbot.sandbox.payments_emulator_webhooks import UNSET, WebhookSender

log = logging.getLogger("habitbot.sandbox.payments_emulator")


# ---------------------------------------------------------------- control API routing


class ControlError(Exception):
    """A refused control request; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ControlRequest:
    """Path groups, query parameters and JSON body of one control call."""

    def __init__(self, groups: tuple[str, ...], query: dict[str, str], body: dict[str, Any]):
        self.groups = groups
        self.query = query
        self.body = body

    def pick(self, *names: str) -> dict[str, Any]:
        return {name: self.body[name] for name in names if name in self.body}

    def number(self, name: str) -> float | None:
        value = self.query.get(name, self.body.get(name))
        if value in (None, ""):
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ControlError(400, f"{name} must be a number") from None


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[[ControlRequest], Any]


def routes(table: Sequence[tuple[str, str, Callable[[ControlRequest], Any]]]) -> list[Route]:
    return [Route(m, re.compile(f"^/control/{p}$"), h) for m, p, h in table]


def route_control(table: Sequence[Route], request: HttpRequest) -> HttpResponse:
    path = request.path.rstrip("/")
    matched = False
    try:
        for route in table:
            match = route.pattern.match(path)
            if match is None:
                continue
            matched = True
            if route.method == request.method:
                control = ControlRequest(match.groups(), request.query, _json_object(request.body))
                result = route.handler(control)
                return json_response(200, {"ok": True} if result is None else result)
        if matched:
            raise ControlError(405, f"{request.method} is not allowed on {path}")
        raise ControlError(404, f"no control route {path}")
    except ControlError as exc:
        return json_response(exc.status, {"ok": False, "error": exc.message})
    except ValueError as exc:
        return json_response(400, {"ok": False, "error": str(exc)})


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise ControlError(400, "body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ControlError(400, "body must be a JSON object")
    return data


def control_int(value: Any, name: str, default: int | None = None) -> int:
    if value in (None, ""):
        if default is None:
            raise ControlError(400, f"{name} is required")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ControlError(400, f"{name} must be an integer") from None


# ---------------------------------------------------------------- the emulator skeleton


class EmulatorBase(ABC):
    """Lifecycle, faults, request log, clock, webhooks and shared control routes.

    Subclasses implement :meth:`handle_api` (provider API and pages) and :meth:`sweep`
    (time-based transitions), and extend :meth:`control_routes`.
    """

    service = "payments emulator"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        webhook_url: str | None,
        retry_delays: Sequence[float],
        webhook_timeout: float,
        source_address: str | None,
        public_url: str | None,
        fault_hold_max: float,
        sweep_interval: float,
    ) -> None:
        self.host = host
        self.port = port
        self.public_url = public_url.rstrip("/") if public_url else None
        self.fault_hold_max = fault_hold_max
        self.sweep_interval = sweep_interval
        self.lock = threading.RLock()
        self.faults = FaultBook()
        self.requests = RequestLog()
        self.webhooks = WebhookSender(webhook_url, retry_delays, webhook_timeout, source_address,
                                      user_agent=f"{self.service} (HabitBot sandbox)")
        self.clock_offset = 0.0
        self._control_table = routes(self.control_routes())
        self._server: PaymentsHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> EmulatorBase:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = PaymentsHTTPServer((self.host, self.port), self)
        self._server = server
        self.port = server.server_address[1]
        self.webhooks.start()
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"{self.service}-http", daemon=True)
        self._thread.start()
        self._sweeper = threading.Thread(target=self._sweep_loop, name=f"{self.service}-sweep",
                                         daemon=True)
        self._sweeper.start()
        return self

    def stop(self) -> None:
        """Stop serving: release held requests, close connections, stop webhook deliveries."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        self.faults.clear()
        server.shutdown()
        server.close_connections()
        server.server_close()
        self.webhooks.stop()
        for thread in (self._thread, self._sweeper):
            if thread is not None:
                thread.join(timeout=5)
        self._thread = self._sweeper = None

    def __enter__(self) -> EmulatorBase:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Where users' browsers reach the emulator (pay pages): ``public_url`` or ``url``."""
        return self.public_url or self.url

    def now(self) -> float:
        """The emulator's clock: wall time plus what the control API advanced it by."""
        return time.time() + self.clock_offset

    def _sweep_loop(self) -> None:
        while not self._stopping.wait(self.sweep_interval):
            try:
                self.sweep()
            except Exception:
                log.exception("%s: sweep failed", self.service)

    # ------------------------------------------------------------ to implement

    @abstractmethod
    def handle_api(self, request: HttpRequest) -> HttpResponse:
        """The provider's own API: one request in, one response out."""

    @abstractmethod
    def sweep(self) -> None:
        """Apply time-based transitions (expiry); called periodically and on clock changes."""

    @abstractmethod
    def reset_state(self) -> None:
        """Forget payments or invoices (the control API's reset)."""

    # ------------------------------------------------------------ dispatch

    def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/control" or request.path.startswith("/control/"):
            return route_control(self._control_table, request)
        return self.handle_api(request)

    def fault_for(self, endpoint: str, after: bool) -> Fault | None:
        return self.faults.take(endpoint, after)

    # ------------------------------------------------------------ shared control operations

    def add_fault(self, mode: str, endpoints: Iterable[str] | str | None = None,
                  count: int | None = None, seconds: float | None = None,
                  status: int | None = None, after: bool = False,
                  retry_after: int | None = None) -> dict[str, Any]:
        """Inject ``5xx``, ``timeout``, ``outage`` or ``429`` on some (or all) API endpoints."""
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        return self.faults.add(mode, endpoints, count, seconds, status, after,
                               retry_after).describe()

    def clear_faults(self) -> dict[str, Any]:
        return {"ok": True, "cleared": self.faults.clear()}

    def deliveries(self, object_id: str | None = None,
                   event: str | None = None) -> list[dict[str, Any]]:
        return self.webhooks.deliveries(object_id, event)

    def wait_for_deliveries(self, predicate: Callable[[list[dict[str, Any]]], Any],
                            timeout: float = 10.0, object_id: str | None = None) -> Any:
        """Block until ``predicate(deliveries)`` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            version = self.webhooks.version
            value = predicate(self.webhooks.deliveries(object_id))
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("webhook deliveries did not reach the expected state")
            self.webhooks.wait_change(version, left)

    def configure_webhook(self, url: str | None = UNSET, enabled: bool | None = None,
                          retry_delays: Sequence[float] | None = None,
                          timeout: float | None = None,
                          source_address: str | None = UNSET) -> dict[str, Any]:
        self.webhooks.configure(url=url, enabled=enabled, retry_delays=retry_delays,
                                timeout=timeout, source_address=source_address)
        return self.webhooks.settings()

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the emulator's clock forward (expiry of invoices and payments), then sweep."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self.lock:
            self.clock_offset += seconds
        self.sweep()
        return {"offset": self.clock_offset, "now": self.now()}

    def reset(self) -> dict[str, Any]:
        """Forget every object, delivery, fault and logged request; keep the settings."""
        self.faults.clear()
        with self.lock:
            self.reset_state()
            self.clock_offset = 0.0
        self.webhooks.reset()
        self.requests.clear()
        return {"ok": True}

    def control_routes(self) -> list[tuple[str, str, Callable[[ControlRequest], Any]]]:
        return [
            ("GET", "health", lambda r: {"ok": True, "service": self.service}),
            ("POST", "reset", lambda r: self.reset()),
            ("GET", "faults", lambda r: {"faults": self.faults.describe()}),
            ("POST", "faults", self._control_fault),
            ("DELETE", "faults", lambda r: self.clear_faults()),
            ("GET", "deliveries", self._control_deliveries),
            ("GET", "webhook", lambda r: self.webhooks.settings()),
            ("POST", "webhook", lambda r: self.configure_webhook(**r.pick(
                "url", "enabled", "retry_delays", "timeout", "source_address"))),
            ("GET", "requests", lambda r: {"requests": self.requests.entries(
                r.query.get("endpoint"), control_int(r.query.get("since_id"), "since_id", 0))}),
            ("POST", "clock", lambda r: self.advance_clock(r.number("advance") or 0.0)),
        ]

    def _control_fault(self, request: ControlRequest) -> Any:
        if "mode" not in request.body:
            raise ControlError(400, "mode is required")
        return self.add_fault(str(request.body["mode"]), **request.pick(
            "endpoints", "count", "seconds", "status", "after", "retry_after"))

    def _control_deliveries(self, request: ControlRequest) -> Any:
        wait = request.number("wait_version")
        if wait is not None:
            self.webhooks.wait_change(int(wait), min(request.number("timeout") or 0.0, 30.0))
        version = self.webhooks.version
        return {"version": version, "deliveries": self.webhooks.deliveries(
            request.query.get("object_id"), request.query.get("event"))}


def serve_forever(emulator: EmulatorBase, banner: str, log_level: str) -> int:
    """Run an emulator in the foreground until SIGTERM or SIGINT; returns the exit code."""
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    try:
        emulator.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", emulator.host, emulator.port, exc)
        return 1
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        log.info("%s listening on %s", banner, emulator.url)
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("%s stopped", banner)
    return 0
