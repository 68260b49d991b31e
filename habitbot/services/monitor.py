"""Health monitor: turns failing health checks into operator alerts.

Runs as a thread in the bot and in the scheduler process, so that each watches the other (a
dead scheduler cannot report itself); the shared alert cooldown makes them alert once. It also
writes alerts that were raised while the database was down.

A failing `workers` check is alerted only once it has lasted `CONFIRM_SECONDS`: a worker that
stops cleanly leaves the registry at once, so during `supervisorctl stop habitbot:*` (or a
restart) the bot's monitor, still finishing its last poll, would see "0 alive" for a moment.
The bot and the scheduler are gone — stopped or killed — within their `stopwaitsecs` (40 s and
15 s), before such a failure could last that long; workers really down stay down and are
alerted one check later (the monitor looks again as soon as the grace period is over).
"""

from __future__ import annotations

import logging
import threading
import time

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
# How long a failing check must last before it is alerted (longer than any program's
# stopwaitsecs but the workers', see the module docstring).
CONFIRM_SECONDS = {"workers": 45.0}


class HealthMonitor:
    def __init__(self, checker: HealthChecker, alerts: AlertService, interval: float = 60.0,
                 skip: tuple[str, ...] = ()):
        self._checker = checker
        self._alerts = alerts
        self._interval = interval
        self._skip = skip
        self._failing: set[str] = set()  # alerted, waiting for the recovery
        self._failing_since: dict[str, float] = {}  # failing, not confirmed yet
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: float | None = None) -> dict[str, dict]:
        """One pass; `now` is a time.monotonic() value."""
        now = time.monotonic() if now is None else now
        _, results = self._checker.run()
        for name, severity in SEVERITY.items():
            if name in self._skip or name not in results:
                continue
            result = results[name]
            if not result["ok"]:
                since = self._failing_since.setdefault(name, now)
                if now - since < CONFIRM_SECONDS.get(name, 0.0):
                    log.info("health check failing, confirming before alerting",
                             extra={"check": name, "confirm_seconds": CONFIRM_SECONDS[name]})
                    continue
                detail = result.get("error") or _age_text(result)
                self._alerts.raise_alert(severity, f"health_check {name}", detail,
                                         fingerprint=f"health_check:{name}")
                self._failing.add(name)
                continue
            self._failing_since.pop(name, None)
            if name in self._failing:
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

    def next_pass_in(self, now: float | None = None) -> float:
        """Seconds to the next pass: the interval, or sooner when a failure awaits its
        confirmation."""
        now = time.monotonic() if now is None else now
        due = [since + CONFIRM_SECONDS.get(name, 0.0) - now
               for name, since in self._failing_since.items() if name not in self._failing]
        return max(1.0, min([self._interval, *due]))

    def _loop(self) -> None:
        while not self._stop.wait(self.next_pass_in()):
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
