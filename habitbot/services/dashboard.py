"""The figures of the operator dashboard, cheap enough to draw with a million users.

Every query is either bounded by a time range on an indexed column or limited through an index.
Time series are counted per bucket (a day or an hour); buckets old enough not to change any more
are kept in Redis for `SETTLED_TTL`, so a page view counts only the recent buckets and the
settled ones at most once per TTL. Without Redis everything is counted from the database.

The send rate is measured from the sender's shared counters (`habitbot:metrics:sender`): each
dashboard view records a sample at most every `SAMPLE_EVERY` seconds and the rate is the change
between consecutive samples.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis
from sqlalchemy import Engine, func, literal, select
from sqlalchemy.orm import Session

from habitbot.models import (
    AdminAlert,
    Habit,
    HabitCheckin,
    JobExecutionLog,
    Payment,
    ReminderDelivery,
    User,
)
from habitbot.redis_client import KEY_PREFIX
from habitbot.services.billing import OPEN_STATUSES
from habitbot.services.operator import system_counts
from habitbot.telegram import sender

log = logging.getLogger(__name__)

CACHE_PREFIX = f"{KEY_PREFIX}admin:bucket:"
SETTLED_TTL = 600
SAMPLES_KEY = f"{KEY_PREFIX}admin:sender_samples"
SAMPLE_GUARD_KEY = f"{KEY_PREFIX}admin:sender_sample_guard"
SAMPLE_EVERY = 5
SAMPLE_WINDOW = 3600
PENDING_TOO_LONG = timedelta(minutes=30)
REMINDER_STATUSES = ("sent", "failed", "missed")
CHECKIN_STATUSES = ("done", "skipped")
SENDER_OUTCOMES = ("sent", "rate_limited", "retried", "failed_permanent", "failed_transient",
                   "blocked", "skipped_blocked", "wait_ms")

Counts = dict[str, dict[str, int]]  # bucket key -> {status: count}


@dataclass(frozen=True)
class Series:
    """A chart's data: one label per bucket and one list of values per dataset."""

    labels: list[str]
    datasets: dict[str, list[float]]

    def chart(self) -> dict[str, Any]:
        return {"labels": self.labels,
                "datasets": [{"label": name, "data": values}
                             for name, values in self.datasets.items()]}


def figures(engine: Engine, conn: redis.Redis | None, ttl: int = 15) -> dict[str, int]:
    """The operator summary of `habitbot status` (users, habits, reminders, payments), kept
    for `ttl` seconds: several of its counts read a whole table."""
    key = f"{KEY_PREFIX}admin:figures"
    if conn is not None:
        try:
            raw = conn.get(key)
            if raw is not None:
                return dict(json.loads(raw))
        except redis.RedisError:
            conn = None
    counts = system_counts(engine)
    if conn is not None:
        try:
            conn.set(key, json.dumps(counts), ex=ttl)
        except redis.RedisError:
            pass
    return counts


# -- bucketed counts with a cache for the settled buckets -----------------------------------

def _bucketed(conn: redis.Redis | None, name: str, keys: Sequence[str], live: int,
              count: Callable[[str, str], Counts]) -> Counts:
    """Counts for every key; the last `live` keys are always counted, the others come from
    the cache when there. `count(first_key, last_key)` counts an inclusive range of keys."""
    settled = list(keys[:len(keys) - live])
    found: Counts = {}
    if conn is not None and settled:
        try:
            cached = conn.mget([f"{CACHE_PREFIX}{name}:{key}" for key in settled])
            found = {key: json.loads(raw) for key, raw in zip(settled, cached, strict=True)
                     if raw is not None}
        except redis.RedisError:
            log.warning("dashboard cache unavailable", extra={"series": name})
            conn = None
    missing = [key for key in keys if key not in found]
    if not missing:
        return found
    counted = count(missing[0], missing[-1])
    result = {**found, **{key: counted.get(key, {}) for key in missing}}
    if conn is not None:
        fresh = [key for key in missing if key in settled]
        try:
            pipe = conn.pipeline(transaction=False)
            for key in fresh:
                pipe.set(f"{CACHE_PREFIX}{name}:{key}", json.dumps(result[key]), ex=SETTLED_TTL)
            pipe.execute()
        except redis.RedisError:
            log.warning("dashboard cache unavailable", extra={"series": name})
    return result


def _group(rows: Sequence[Any], key: Callable[[Any], str]) -> Counts:
    out: Counts = {}
    for bucket, status, n in rows:
        out.setdefault(key(bucket), {})[status] = int(n)
    return out


def _day_key(value: date | datetime) -> str:
    return value.strftime("%Y-%m-%d")


def _hour_key(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H")


def _series(keys: Sequence[str], labels: list[str], counts: Counts,
            names: dict[str, Sequence[str]]) -> Series:
    """One dataset per display name, summing the statuses it stands for."""
    return Series(labels, {name: [sum(counts.get(k, {}).get(s, 0) for s in statuses)
                                  for k in keys]
                           for name, statuses in names.items()})


def daily_activity(engine: Engine, conn: redis.Redis | None, today: date,
                   days: int = 30) -> Series:
    """New habits (by creation day, UTC) and check-ins (by the day they count for) per day.
    Check-ins can still be added for yesterday, so the last two days are always counted."""
    day_list = [today - timedelta(days=days - 1 - i) for i in range(days)]
    keys = [_day_key(d) for d in day_list]

    def count_habits(first: str, last: str) -> Counts:
        start = datetime.fromisoformat(first).replace(tzinfo=UTC)
        end = datetime.fromisoformat(last).replace(tzinfo=UTC) + timedelta(days=1)
        bucket = func.date_trunc("day", func.timezone("UTC", Habit.created_at))
        with Session(engine) as session:
            rows = session.execute(
                select(bucket, literal("new"), func.count())
                .where(Habit.created_at >= start, Habit.created_at < end)
                .group_by(bucket)).all()
        return _group(rows, _day_key)

    def count_checkins(first: str, last: str) -> Counts:
        with Session(engine) as session:
            rows = session.execute(
                select(HabitCheckin.local_date, HabitCheckin.status, func.count())
                .where(HabitCheckin.local_date >= date.fromisoformat(first),
                       HabitCheckin.local_date <= date.fromisoformat(last))
                .group_by(HabitCheckin.local_date, HabitCheckin.status)).all()
        return _group(rows, _day_key)

    habits = _bucketed(conn, "habits_daily", keys, 1, count_habits)
    checkins = _bucketed(conn, "checkins_daily", keys, 2, count_checkins)
    labels = [d.strftime("%m-%d") for d in day_list]
    merged = {k: {**habits.get(k, {}), **checkins.get(k, {})} for k in keys}
    return _series(keys, labels, merged, {"new habits": ("new",), "check-ins done": ("done",),
                                          "skipped": ("skipped",)})


def reminders_hourly(engine: Engine, conn: redis.Redis | None, now: datetime,
                     hours: int = 48) -> Series:
    """Reminder deliveries per hour of their creation (≈ their fire time) by outcome. A
    delivery settles within its lease, so only the last two hours are always counted."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hour_list = [current - timedelta(hours=hours - 1 - i) for i in range(hours)]
    keys = [_hour_key(h) for h in hour_list]

    def count(first: str, last: str) -> Counts:
        start = datetime.strptime(first, "%Y-%m-%dT%H").replace(tzinfo=UTC)
        end = datetime.strptime(last, "%Y-%m-%dT%H").replace(tzinfo=UTC) + timedelta(hours=1)
        bucket = func.date_trunc("hour", func.timezone("UTC", ReminderDelivery.created_at))
        with Session(engine) as session:
            rows = session.execute(
                select(bucket, ReminderDelivery.status, func.count())
                .where(ReminderDelivery.created_at >= start, ReminderDelivery.created_at < end)
                .group_by(bucket, ReminderDelivery.status)).all()
        return _group(rows, _hour_key)

    counts = _bucketed(conn, "reminders_hourly", keys, 2, count)
    labels = [h.strftime("%m-%d %H:00") for h in hour_list]
    return _series(keys, labels, counts, {s: (s,) for s in REMINDER_STATUSES})


# -- the sender: rate against Telegram's limit ---------------------------------------------

@dataclass(frozen=True)
class SenderActivity:
    limit: float                       # messages per second allowed (TELEGRAM_GLOBAL_RATE)
    current_rate: float | None         # over the last two samples; None before two exist
    totals: dict[str, dict[str, int]]  # lane -> outcome -> count since the counters began
    series: Series = field(default_factory=lambda: Series([], {}))


def _sample(counters: dict[str, int], now: float) -> dict[str, float]:
    sent = sum(v for k, v in counters.items() if k.endswith(":sent"))
    limited = sum(v for k, v in counters.items() if k.endswith(":rate_limited"))
    return {"t": now, "sent": sent, "rate_limited": limited}


def sender_activity(conn: redis.Redis, limit: float, now: float | None = None,
                    window: int = SAMPLE_WINDOW) -> SenderActivity:
    """Raises redis.RedisError when Redis is down: the caller shows that instead."""
    now = time.time() if now is None else now
    counters = sender.metrics(conn)
    # One sample per SAMPLE_EVERY-second slot, whichever process views the page first.
    slot = f"{SAMPLE_GUARD_KEY}:{int(now // SAMPLE_EVERY)}"
    if conn.set(slot, "1", nx=True, ex=2 * SAMPLE_EVERY):
        pipe = conn.pipeline()
        pipe.zadd(SAMPLES_KEY, {json.dumps(_sample(counters, now)): now})
        pipe.zremrangebyscore(SAMPLES_KEY, 0, now - window)
        pipe.execute()
    raw_samples = conn.zrangebyscore(SAMPLES_KEY, now - window, "+inf")
    samples = [json.loads(raw) for raw in raw_samples]  # type: ignore[arg-type]
    labels: list[str] = []
    rates: list[float] = []
    limited: list[float] = []
    for before, after in zip(samples, samples[1:], strict=False):
        elapsed = after["t"] - before["t"]
        if elapsed <= 0:
            continue
        labels.append(datetime.fromtimestamp(after["t"], UTC).strftime("%H:%M:%S"))
        # A counter that went down was reset (Redis flushed): count from zero.
        rates.append(round(max(0.0, after["sent"] - before["sent"]) / elapsed, 2))
        limited.append(max(0, after["rate_limited"] - before["rate_limited"]))
    totals: dict[str, dict[str, int]] = {}
    for key, value in counters.items():
        lane, _, outcome = key.partition(":")
        totals.setdefault(lane, {})[outcome] = value
    series = Series(labels, {"messages/s": rates, "limit": [limit] * len(labels),
                             "429s": limited})
    return SenderActivity(limit, rates[-1] if rates else None, totals, series)


# -- payments, alerts, job runs ------------------------------------------------------------

@dataclass(frozen=True)
class PaymentGroup:
    provider: str
    status: str
    currency: str
    count: int
    amount_minor: int


@dataclass(frozen=True)
class StalePayment:
    id: int
    telegram_id: int
    provider: str
    provider_payment_id: str | None
    status: str
    amount_minor: int
    currency: str
    created_at: datetime
    age_minutes: int


@dataclass(frozen=True)
class PaymentsOverview:
    since: datetime
    groups: list[PaymentGroup]
    stale: list[StalePayment]   # open for longer than PENDING_TOO_LONG, oldest first
    stale_by_status: dict[tuple[str, str], int]  # (provider, status) -> how many of them

    @property
    def stale_total(self) -> int:
        return sum(self.stale_by_status.values())

    def chart(self) -> dict[str, Any]:
        providers = sorted({g.provider for g in self.groups})
        statuses = sorted({g.status for g in self.groups})
        counts: dict[tuple[str, str], int] = {}
        for g in self.groups:
            counts[(g.provider, g.status)] = counts.get((g.provider, g.status), 0) + g.count
        return Series(providers, {s: [counts.get((p, s), 0) for p in providers]
                                  for s in statuses}).chart()


def payments_overview(engine: Engine, now: datetime, days: int = 30,
                      stale_limit: int = 50) -> PaymentsOverview:
    since = now - timedelta(days=days)
    stale_before = now - PENDING_TOO_LONG
    open_and_old = (Payment.status.in_(OPEN_STATUSES), Payment.created_at < stale_before)
    with Session(engine) as session:
        groups = session.execute(
            select(Payment.provider, Payment.status, Payment.currency, func.count(),
                   func.coalesce(func.sum(Payment.amount_minor), 0))
            .where(Payment.created_at >= since)
            .group_by(Payment.provider, Payment.status, Payment.currency)
            .order_by(Payment.provider, Payment.status, Payment.currency)).all()
        stale = session.execute(
            select(Payment.id, User.telegram_id, Payment.provider, Payment.provider_payment_id,
                   Payment.status, Payment.amount_minor, Payment.currency, Payment.created_at)
            .join(User, User.id == Payment.user_id)
            .where(*open_and_old).order_by(Payment.created_at).limit(stale_limit)).all()
        stale_counts = session.execute(
            select(Payment.provider, Payment.status, func.count()).where(*open_and_old)
            .group_by(Payment.provider, Payment.status)).all()
    return PaymentsOverview(
        since,
        [PaymentGroup(p, s, c, int(n), int(a)) for p, s, c, n, a in groups],
        [StalePayment(*row, age_minutes=int((now - row.created_at).total_seconds() // 60))
         for row in stale],
        {(p, s): int(n) for p, s, n in stale_counts})


def recent_alerts(engine: Engine, limit: int = 20) -> list[AdminAlert]:
    with Session(engine) as session:
        return list(session.execute(
            select(AdminAlert).order_by(AdminAlert.created_at.desc()).limit(limit)).scalars())


def recent_job_runs(engine: Engine, limit: int = 30) -> list[JobExecutionLog]:
    with Session(engine) as session:
        return list(session.execute(
            select(JobExecutionLog).order_by(JobExecutionLog.started_at.desc())
            .limit(limit)).scalars())
