"""Operator alerts: severity, component, message, fingerprint and a cooldown.

The same fingerprint is delivered at most once per cooldown (a Redis key shared by every
process; a per-process memory when Redis is down). Every alert, delivered or suppressed, is
recorded in `admin_alerts`; when the database is down the record waits in Redis (or memory) and
`flush_pending()` writes it once the database is back, so an alert about the database itself
still goes out and is recorded later.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import redis
from sqlalchemy import Engine, insert
from sqlalchemy.exc import SQLAlchemyError

from habitbot.models import AdminAlert
from habitbot.redis_client import KEY_PREFIX
from habitbot.telegram.errors import TelegramError

log = logging.getLogger(__name__)

PENDING_KEY = f"{KEY_PREFIX}alerts:unrecorded"
MAX_TEXT = 3900
SEVERITIES = ("INFO", "WARNING", "CRITICAL")

Deliver = Callable[[int, str], None]


@dataclass
class Alert:
    severity: str
    component: str
    message: str
    fingerprint: str
    raised_at: str
    status: str = "logged"

    @property
    def text(self) -> str:
        return f"[{self.severity}] {self.component}: {self.message}"[:MAX_TEXT]


class AlertService:
    def __init__(self, engine: Engine | None, redis_conn: redis.Redis | None,
                 deliver: Deliver | None, chat_id: int | None, cooldown_seconds: int = 900):
        self._engine = engine
        self._redis = redis_conn
        self._deliver = deliver
        self._chat_id = chat_id
        self._cooldown = cooldown_seconds
        self._local_cooldowns: dict[str, float] = {}
        self._local_pending: deque[dict] = deque(maxlen=1000)
        self._lock = threading.Lock()

    def raise_alert(self, severity: str, component: str, message: str,
                    fingerprint: str | None = None) -> Alert:
        """Deliver (unless inside the cooldown), log and record; never raises."""
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}")
        alert = Alert(severity, component, message, fingerprint or f"{component}:{message}"[:200],
                      datetime.now(UTC).isoformat())
        if not self._claim_cooldown(alert.fingerprint):
            alert.status = "suppressed"
        elif self._chat_id is None or self._deliver is None:
            alert.status = "logged"
        else:
            alert.status = self._send(alert)
        level = logging.INFO if alert.status == "suppressed" else logging.WARNING
        log.log(level, alert.text, extra={"alert_status": alert.status,
                                          "fingerprint": alert.fingerprint})
        self._record(alert)
        return alert

    def _claim_cooldown(self, fingerprint: str) -> bool:
        if self._redis is not None:
            try:
                return bool(self._redis.set(f"{KEY_PREFIX}alert:cooldown:{fingerprint}", "1",
                                            nx=True, ex=self._cooldown))
            except redis.RedisError:
                pass
        now = time.monotonic()
        with self._lock:
            until = self._local_cooldowns.get(fingerprint, 0.0)
            if until > now:
                return False
            self._local_cooldowns[fingerprint] = now + self._cooldown
            return True

    def _send(self, alert: Alert) -> str:
        assert self._deliver is not None and self._chat_id is not None
        try:
            self._deliver(self._chat_id, alert.text)
            return "sent"
        except TelegramError as exc:
            log.error("Failed to send alert", extra={"fingerprint": alert.fingerprint,
                                                     "code": exc.code,
                                                     "reason": exc.description})
            return "failed"

    def _record(self, alert: Alert) -> None:
        row = asdict(alert)
        try:
            self._insert([row])
            return
        except SQLAlchemyError:
            log.warning("alert not recorded yet: database unavailable",
                        extra={"fingerprint": alert.fingerprint})
        try:
            if self._redis is None:
                raise redis.RedisError("no redis")
            self._redis.rpush(PENDING_KEY, json.dumps(row))
        except redis.RedisError:
            with self._lock:
                self._local_pending.append(row)

    def _insert(self, rows: list[dict]) -> None:
        if self._engine is None:
            raise SQLAlchemyError("no database configured")
        values = [{
            "fingerprint": r["fingerprint"][:200], "severity": r["severity"],
            "component": r["component"][:64], "message": r["message"], "status": r["status"],
            "raised_at": datetime.fromisoformat(r["raised_at"]),
        } for r in rows]
        with self._engine.begin() as conn:
            conn.execute(insert(AdminAlert), values)

    def flush_pending(self) -> int:
        """Write alerts that were raised while the database was down; returns how many."""
        with self._lock:
            rows = list(self._local_pending)
            self._local_pending.clear()
        written = 0
        try:
            if rows:
                self._insert(rows)
                written += len(rows)
                rows = []
            while self._redis is not None:
                raw = self._redis.lpop(PENDING_KEY, 100)
                if not raw:
                    break
                batch = [json.loads(item) for item in raw]  # type: ignore[union-attr,arg-type]
                try:
                    self._insert(batch)
                except SQLAlchemyError:
                    self._redis.lpush(PENDING_KEY, *[json.dumps(r) for r in reversed(batch)])
                    raise
                written += len(batch)
        except (SQLAlchemyError, redis.RedisError):
            with self._lock:
                self._local_pending.extend(rows)
        return written
