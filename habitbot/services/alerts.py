"""Operator alerts: severity, component, message, fingerprint and a cooldown.

The same fingerprint is delivered at most once per cooldown. The cooldown is checked before
anything is written: a Redis key shared by every process (`SET NX` with the cooldown as its
TTL); when Redis is down, this process's memory and then the last `admin_alerts` row of that
fingerprint. A delivery that fails gives the cooldown back, so the next occurrence is
delivered — after `FAILURE_BACKOFF_SECONDS` when Telegram could not take it (network, 5xx, 429)
or the alert is about Telegram being unreachable: an outage must not turn every failed call
into another alert that waits out the sender's retries.

An alert that goes out (sent, logged without ALERT_CHAT_ID, or failed) is recorded in
`admin_alerts`; one inside the cooldown (suppressed) writes nothing: it is counted in
`habitbot_alerts_total{status="suppressed"}` and logged at most once a minute per fingerprint,
so a flood of refused requests that each raise an alert costs one row per cooldown. Alerts
whose fingerprint carries an id (an unknown payment, another shop) are bounded too: a component
gets `COMPONENT_BUDGET` distinct WARNING/INFO fingerprints per cooldown, then one alert says
the rest are only logged and counted (CRITICAL ones always go out). When the
database is down the record waits in Redis (or memory), at most `MAX_UNRECORDED` of them (the
first ones of an outage are kept; what is dropped is counted in
`habitbot_alert_records_dropped_total`), and `flush_pending()` writes them once the database is
back, so an alert about the database itself still goes out and is recorded later.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import Engine, func, insert, select, text, tuple_
from sqlalchemy.exc import SQLAlchemyError

from habitbot import metrics
from habitbot.logs import Throttled
from habitbot.models import AdminAlert
from habitbot.redis_client import KEY_PREFIX
from habitbot.telegram.errors import TelegramError

log = logging.getLogger(__name__)
quiet = Throttled(log)

PENDING_KEY = f"{KEY_PREFIX}alerts:unrecorded"
MAX_UNRECORDED = 1000
MAX_TEXT = 3900
SEVERITIES = ("INFO", "WARNING", "CRITICAL")
COOLDOWN_PREFIX = f"{KEY_PREFIX}alert:cooldown:"
BUDGET_PREFIX = f"{KEY_PREFIX}alert:budget:"
# Distinct fingerprints one component may raise per cooldown (WARNING and INFO: CRITICAL ones
# are money or outages and always go out). Fingerprints that carry an id (an unknown payment,
# another shop) would otherwise give a row per id; past the budget they are counted and one
# "flood" alert says so.
COMPONENT_BUDGET = 20
FLOOD_PREFIX = "alert_flood:"
FAILURE_BACKOFF_SECONDS = 60
# Raised by the sender when Telegram cannot be reached: its own delivery is bound to fail too.
TELEGRAM_UNREACHABLE = "telegram_unreachable"

# Give a claimed cooldown back (or shorten it to a backoff) only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
"""

# Push a record to the waiting list unless it is full; 1 when pushed, 0 when dropped.
# Remove exactly the waiting records that were written (each once, from the oldest end).
_REMOVE = """
local removed = 0
for i = 1, #ARGV do removed = removed + redis.call('LREM', KEYS[1], 1, ARGV[i]) end
return removed
"""
FLUSH_BATCH = 100
# Serialises flushes of different processes, so a record two of them read is written once.
FLUSH_LOCK_KEY = 0x68626F7401  # "hbot" 1
_PUSH_BOUNDED = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
"""
# KEYS: the component's set of fingerprints; ARGV: fingerprint, cooldown, budget. 0 when the
# fingerprint is already in the set, else its place (the set never grows past the budget).
_BUDGET = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
local n = redis.call('SCARD', KEYS[1])
if n >= tonumber(ARGV[3]) then return n + 1 end
redis.call('SADD', KEYS[1], ARGV[1])
if n == 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return n + 1
"""
# Statuses whose rows mean "this fingerprint went out": the database fallback of the cooldown.
_WENT_OUT = ("sent", "logged")

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


def _values(rows: list[dict]) -> list[dict]:
    return [{
        "fingerprint": r["fingerprint"][:200], "severity": r["severity"],
        "component": r["component"][:64], "message": r["message"], "status": r["status"],
        "raised_at": datetime.fromisoformat(r["raised_at"]),
    } for r in rows]


class AlertService:
    def __init__(self, engine: Engine | None, redis_conn: redis.Redis | None,
                 deliver: Deliver | None, chat_id: int | None, cooldown_seconds: int = 900):
        self._engine = engine
        self._redis = redis_conn
        self._deliver = deliver
        self._chat_id = chat_id
        self._cooldown = cooldown_seconds
        self._local_cooldowns: dict[str, float] = {}
        self._local_budgets: dict[str, tuple[float, set[str]]] = {}
        self._local_pending: deque[dict] = deque()
        self._lock = threading.Lock()
        self._release_script = (redis_conn.register_script(_RELEASE)
                                if redis_conn is not None else None)
        self._push_script = (redis_conn.register_script(_PUSH_BOUNDED)
                             if redis_conn is not None else None)
        self._budget_script = (redis_conn.register_script(_BUDGET)
                               if redis_conn is not None else None)
        self._remove_script = (redis_conn.register_script(_REMOVE)
                               if redis_conn is not None else None)

    def raise_alert(self, severity: str, component: str, message: str,
                    fingerprint: str | None = None) -> Alert:
        """Deliver, log and record — or, inside the cooldown, only count (and now and then
        log) it; never raises."""
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}")
        alert = Alert(severity, component, message, fingerprint or f"{component}:{message}"[:200],
                      datetime.now(UTC).isoformat())
        claim = self._claim_cooldown(alert.fingerprint)
        over_budget = claim is not None and self._over_budget(alert)
        if claim is None or over_budget:
            alert.status = "suppressed"  # over the budget the fingerprint stays claimed too
        elif self._chat_id is None or self._deliver is None:
            alert.status = "logged"
        else:
            failure = self._send(alert)
            alert.status = "sent" if failure is None else "failed"
            if failure is not None:
                backoff = FAILURE_BACKOFF_SECONDS if (
                    failure.transient or alert.fingerprint == TELEGRAM_UNREACHABLE) else 0
                self._release_cooldown(alert.fingerprint, claim, backoff)
        self._count("habitbot_alerts_total", status=alert.status)
        if alert.status == "suppressed":
            # One past the budget is news only the log keeps: at WARNING, like one sent.
            quiet.log(logging.WARNING if over_budget else logging.INFO, alert.fingerprint,
                      alert.text, alert_status=alert.status, fingerprint=alert.fingerprint,
                      over_budget=over_budget)
            return alert
        log.warning(alert.text, extra={"alert_status": alert.status,
                                       "fingerprint": alert.fingerprint})
        self._record(alert)
        return alert

    def _over_budget(self, alert: Alert) -> bool:
        """True when the alert's component already raised `COMPONENT_BUDGET` other
        fingerprints in this cooldown (then the one alert that says so is raised too)."""
        if alert.severity == "CRITICAL" or alert.fingerprint.startswith(FLOOD_PREFIX):
            return False
        if self._budget_place(alert.component, alert.fingerprint) <= COMPONENT_BUDGET:
            return False
        self.raise_alert(
            "WARNING", alert.component,
            f"more than {COMPONENT_BUDGET} different {alert.component} alerts in "
            f"{max(1, self._cooldown // 60)} min; the next ones of this cooldown are only "
            "logged and counted (habitbot_alerts_total{status=\"suppressed\"}): check the logs",
            fingerprint=f"{FLOOD_PREFIX}{alert.component}"[:200])
        return True

    def _budget_place(self, component: str, fingerprint: str) -> int:
        """0 for a fingerprint the component already has in this cooldown, else its place
        among the component's fingerprints (only the first `COMPONENT_BUDGET` are kept)."""
        if self._budget_script is not None:
            try:
                return int(self._budget_script(keys=[f"{BUDGET_PREFIX}{component}"],
                                               args=[fingerprint, self._cooldown,
                                                     COMPONENT_BUDGET]))
            except redis.RedisError:
                pass
        now = time.monotonic()
        with self._lock:
            started, seen = self._local_budgets.get(component, (now, set()))
            if now - started >= self._cooldown:
                started, seen = now, set()
            if len(self._local_budgets) > 1000:
                self._local_budgets.clear()
            self._local_budgets[component] = (started, seen)
            if fingerprint in seen:
                return 0
            if len(seen) < COMPONENT_BUDGET:
                seen.add(fingerprint)
            return len(seen) if fingerprint in seen else COMPONENT_BUDGET + 1

    def _count(self, name: str, **labels: str) -> None:
        if self._redis is not None:
            metrics.incr(self._redis, name, 1, **labels)

    def _claim_cooldown(self, fingerprint: str) -> str | None:
        """Take the fingerprint's cooldown: a claim token, or None when it is running."""
        token = uuid.uuid4().hex
        if self._redis is not None:
            try:
                claimed = self._redis.set(f"{COOLDOWN_PREFIX}{fingerprint}", token, nx=True,
                                          ex=self._cooldown)
                return token if claimed else None
            except redis.RedisError:
                pass
        with self._lock:
            if self._local_cooldowns.get(fingerprint, 0.0) > time.monotonic():
                return None
        # Another process may have sent it while Redis is down: its row says so.
        left = self._went_out_recently(fingerprint)
        with self._lock:
            now = time.monotonic()
            if self._local_cooldowns.get(fingerprint, 0.0) > now:
                return None  # another thread of this process claimed it meanwhile
            if left is not None:
                self._local_cooldowns[fingerprint] = now + max(1.0, left)
                return None
            self._local_cooldowns[fingerprint] = now + self._cooldown
            return ""  # claimed in this process's memory

    def _went_out_recently(self, fingerprint: str) -> float | None:
        """Seconds left of the cooldown of the last recorded delivery of `fingerprint`, None
        when there is none inside the cooldown (or the database cannot tell)."""
        if self._engine is None:
            return None
        try:
            with self._engine.connect() as conn:
                age = conn.execute(
                    select(func.extract("epoch", func.now() - func.max(AdminAlert.created_at)))
                    .where(AdminAlert.fingerprint == fingerprint[:200],
                           AdminAlert.status.in_(_WENT_OUT),
                           AdminAlert.created_at > func.now() - timedelta(
                               seconds=self._cooldown))).scalar()
        except SQLAlchemyError:
            return None
        return None if age is None else self._cooldown - float(age)

    def _release_cooldown(self, fingerprint: str, claim: str, backoff: int) -> None:
        """Nothing was delivered: the next occurrence may go out (after `backoff` seconds)."""
        if claim and self._release_script is not None:
            try:
                self._release_script(keys=[f"{COOLDOWN_PREFIX}{fingerprint}"],
                                     args=[claim, backoff])
                return
            except redis.RedisError:
                pass
        with self._lock:
            if backoff:
                self._local_cooldowns[fingerprint] = time.monotonic() + backoff
            else:
                self._local_cooldowns.pop(fingerprint, None)

    def _send(self, alert: Alert) -> TelegramError | None:
        """Deliver; the failure, if any."""
        assert self._deliver is not None and self._chat_id is not None
        try:
            self._deliver(self._chat_id, alert.text)
            return None
        except TelegramError as exc:
            log.error("Failed to send alert", extra={"fingerprint": alert.fingerprint,
                                                     "code": exc.code,
                                                     "reason": exc.description})
            return exc

    def _record(self, alert: Alert) -> None:
        row = asdict(alert)
        try:
            self._insert([row])
            return
        except SQLAlchemyError:
            quiet.log(logging.WARNING, "unrecorded", "alert not recorded yet: database "
                      "unavailable", fingerprint=alert.fingerprint)
        try:
            if self._push_script is None:
                raise redis.RedisError("no redis")
            kept = bool(self._push_script(keys=[PENDING_KEY],
                                          args=[json.dumps(row), MAX_UNRECORDED]))
        except redis.RedisError:
            with self._lock:
                kept = len(self._local_pending) < MAX_UNRECORDED
                if kept:
                    self._local_pending.append(row)
        if not kept:
            self._count("habitbot_alert_records_dropped_total")
            quiet.log(logging.ERROR, "dropped", "alert record dropped: too many waiting for "
                      "the database", fingerprint=alert.fingerprint, limit=MAX_UNRECORDED)

    def _insert(self, rows: list[dict]) -> None:
        if self._engine is None:
            raise SQLAlchemyError("no database configured")
        with self._engine.begin() as conn:
            conn.execute(insert(AdminAlert), _values(rows))

    def flush_pending(self) -> int:
        """Write alerts that were raised while the database was down; returns how many rows
        were written.

        Waiting records are read without removing them, written, and only then removed (the
        very records written): a process killed in between leaves them waiting, and the next
        flush skips the ones already written (a record is known by its fingerprint and the
        instant it was raised), so none is lost and none written twice."""
        with self._lock:
            rows = list(self._local_pending)
            self._local_pending.clear()
        written = 0
        try:
            if rows:
                written += self._insert_new(rows)
                rows = []
            for _batch in range(MAX_UNRECORDED // FLUSH_BATCH + 1):
                if self._redis is None or self._remove_script is None:
                    break
                raw = self._redis.lrange(PENDING_KEY, 0, FLUSH_BATCH - 1)
                if not raw:
                    break
                written += self._insert_new([json.loads(item) for item in raw])  # type: ignore[union-attr]
                self._remove_script(keys=[PENDING_KEY], args=list(raw))  # type: ignore[arg-type]
        except (SQLAlchemyError, redis.RedisError):
            with self._lock:
                self._local_pending.extend(rows)
        return written

    def _insert_new(self, rows: list[dict]) -> int:
        """Insert the rows not written yet; returns how many were."""
        if self._engine is None:
            raise SQLAlchemyError("no database configured")
        values = _values(rows)
        with self._engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": FLUSH_LOCK_KEY})
            keys = {(v["fingerprint"], v["raised_at"]) for v in values}
            known = {(r.fingerprint, r.raised_at) for r in conn.execute(
                select(AdminAlert.fingerprint, AdminAlert.raised_at)
                .where(tuple_(AdminAlert.fingerprint, AdminAlert.raised_at).in_(keys)))}
            fresh = []
            for v in values:
                if (v["fingerprint"], v["raised_at"]) not in known:
                    known.add((v["fingerprint"], v["raised_at"]))
                    fresh.append(v)
            if fresh:
                conn.execute(insert(AdminAlert), fresh)
        return len(fresh)
