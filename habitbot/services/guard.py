"""Schema guard: DEGRADED mode instead of a crash loop when the code and schema disagree.

Each process checks the schema at start and then every `interval` seconds. On a mismatch it
enters DEGRADED mode (callers ask `guard.degraded`: the bot answers with a minimal user, the
scheduler stops enqueueing periodic jobs) and raises one alert; when the schema is fixed it
leaves DEGRADED mode by itself, logs it and alerts. A database that cannot be reached is not a
schema problem: the last known state is kept.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from habitbot.services.alerts import AlertService
from habitbot.services.schema import check_schema

log = logging.getLogger(__name__)


class SchemaGuard:
    def __init__(self, engine: Engine, process: str, alerts: AlertService | None = None,
                 interval: float = 60.0):
        self._engine = engine
        self._process = process
        self._alerts = alerts
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = "unknown"  # ok | degraded | unknown (never checked successfully)
        self.reason = ""

    @property
    def degraded(self) -> bool:
        return self.state == "degraded"

    def check(self) -> str:
        """Check once and handle the transition; returns the state."""
        try:
            report = check_schema(self._engine)
        except SQLAlchemyError as exc:
            log.warning("schema check skipped: database unavailable",
                        extra={"component": self._process, "error": type(exc).__name__})
            return self.state
        if report.ok:
            self._enter_ok(report.summary)
        else:
            self._enter_degraded(report.summary)
        return self.state

    def _enter_degraded(self, reason: str) -> None:
        was = self.state
        self.state, self.reason = "degraded", reason
        if was == "degraded":
            return
        log.critical("DEGRADED mode: schema does not match the code",
                     extra={"component": self._process, "reason": reason})
        if self._alerts is not None:
            self._alerts.raise_alert(
                "CRITICAL", "schema", f"DEGRADED mode: {reason}", fingerprint="schema:degraded")

    def _enter_ok(self, summary: str) -> None:
        was = self.state
        self.state, self.reason = "ok", ""
        if was == "degraded":
            log.warning("left DEGRADED mode: schema matches the code again",
                        extra={"component": self._process, "schema": summary})
            if self._alerts is not None:
                self._alerts.raise_alert("INFO", "schema",
                                         f"left DEGRADED mode: {summary}",
                                         fingerprint="schema:recovered")

    def start(self) -> SchemaGuard:
        """Check now, then keep checking in a daemon thread."""
        self.check()
        self._thread = threading.Thread(target=self._loop, name="schema-guard", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:  # the guard must outlive any surprise
                log.exception("schema guard check crashed", extra={"component": self._process})

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
