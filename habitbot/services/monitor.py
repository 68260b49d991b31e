"""Health monitor: turns failing health checks into operator alerts.

Runs as a thread in the bot and in the scheduler process, so that each watches the other (a
dead scheduler cannot report itself); the shared alert cooldown makes them alert once. It also
writes alerts that were raised while the database was down.
"""

from __future__ import annotations

import logging
import threading

from habitbot.services.alerts import AlertService
from habitbot.services.health import HealthChecker

log = logging.getLogger(__name__)

SEVERITY = {
    "database": "CRITICAL",
    "redis": "CRITICAL",
    "bot": "CRITICAL",
    "scheduler": "WARNING",
    "workers": "WARNING",
}


class HealthMonitor:
    def __init__(self, checker: HealthChecker, alerts: AlertService, interval: float = 60.0,
                 skip: tuple[str, ...] = ()):
        self._checker = checker
        self._alerts = alerts
        self._interval = interval
        self._skip = skip
        self._failing: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> dict[str, dict]:
        _, results = self._checker.run()
        for name, severity in SEVERITY.items():
            if name in self._skip or name not in results:
                continue
            result = results[name]
            if not result["ok"]:
                detail = result.get("error") or _age_text(result)
                self._alerts.raise_alert(severity, f"health_check {name}", detail,
                                         fingerprint=f"health_check:{name}")
                self._failing.add(name)
            elif name in self._failing:
                self._failing.discard(name)
                self._alerts.raise_alert("INFO", f"health_check {name}", "recovered",
                                         fingerprint=f"health_check:{name}:recovered")
        if results.get("database", {}).get("ok"):
            written = self._alerts.flush_pending()
            if written:
                log.info("recorded alerts raised while the database was down",
                         extra={"count": written})
        return results

    def start(self) -> HealthMonitor:
        self._thread = threading.Thread(target=self._loop, name="health-monitor", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.run_once()
            except Exception:
                log.exception("health monitor pass failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _age_text(result: dict) -> str:
    if "age_seconds" in result:
        return f"last heartbeat {result['age_seconds']}s ago (limit {result['max_age_seconds']}s)"
    if "alive" in result:
        return f"{result['alive']} alive, at least {result['min']} expected"
    return "failing"
