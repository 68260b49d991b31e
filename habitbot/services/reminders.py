"""Reminders: which schedules are due, one delivery row per (schedule, fire time), and the
life of a delivery: pending → sent / failed / skipped / missed.

The database is the source of truth. `claim_due` takes due schedules through the partial index
on `next_fire_at` (O(due), not O(schedules)) with `FOR UPDATE SKIP LOCKED`, so two ticks never
claim the same row; it writes the delivery (the unique key refuses a second one for the same
fire time) and advances `next_fire_at` from the owner's zone, all in one transaction. Sending
happens afterwards, outside any transaction; a delivery left pending past its lease (a worker
killed mid-batch) is handed out again by `reap_expired` — the at-least-once window.

Every hand-out is a (delivery id, attempts) pair: `start_delivery` takes a delivery only if its
attempts still equal the pair's, so when a reaped copy and the original job both run, only the
first one sends.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from habitbot.models import Habit, HabitCheckin, HabitSchedule, ReminderDelivery, RestPeriod, User
from habitbot.services import progress, schedules

CLAIM_CHUNK = 1000
# A delivery started but not marked within its lease is handed out again by the next tick's
# reaper: a worker killed mid-batch delays its reminders by about the lease + one tick (~2 min).
# A batch renews the leases of what it holds while it works (`renew_leases`), so a slow send
# (a 429 pause) does not let a copy start beside it. The lease is REMINDER_LEASE; this is its
# production default, for callers that pass none.
LEASE = timedelta(seconds=75)
MAX_AGE = timedelta(minutes=60)
MAX_ATTEMPTS = 5


Dispatch = tuple[int, int]  # (delivery id, attempts when it was handed out)


@dataclass(frozen=True)
class ClaimResult:
    claimed: int
    pending_ids: list[int]
    skipped: int
    missed: int

    @property
    def dispatches(self) -> list[Dispatch]:
        return [(delivery_id, 0) for delivery_id in self.pending_ids]


@dataclass(frozen=True)
class DeliveryJob:
    """Everything needed to send one reminder, read right before sending."""

    delivery_id: int
    fire_at: datetime
    telegram_id: int
    language: str
    timezone: str
    habit_id: int
    habit_name: str
    habit_kind: str
    target_value: object
    target_unit: str | None
    local_day: date


def _batch_skip_reasons(session: Session | Connection, rows: Sequence[Any],
                        days: Sequence[date]) -> list[str | None]:
    """The reason to skip each claimed row, with a fixed number of queries per chunk."""
    user_ids = {r.user_id for r in rows}
    habit_ids = {r.habit_id for r in rows}
    first, last = min(days) - timedelta(days=6), max(days)
    rests = session.execute(select(RestPeriod.user_id, RestPeriod.habit_id, RestPeriod.starts_on,
                                   RestPeriod.ends_on)
                            .where(RestPeriod.user_id.in_(user_ids),
                                   RestPeriod.starts_on <= last,
                                   RestPeriod.ends_on >= first)).all()
    checkins = session.execute(select(HabitCheckin.habit_id, HabitCheckin.local_date,
                                      HabitCheckin.status)
                               .where(HabitCheckin.habit_id.in_(habit_ids),
                                      HabitCheckin.local_date >= first,
                                      HabitCheckin.local_date <= last)).all()
    by_day = {(c.habit_id, c.local_date): c.status for c in checkins}
    rests_of: dict[int, list[Any]] = {}
    for rest in rests:
        rests_of.setdefault(rest.user_id, []).append(rest)
    done_of: dict[int, list[date]] = {}
    for checkin in checkins:
        if checkin.status == "done":
            done_of.setdefault(checkin.habit_id, []).append(checkin.local_date)
    return [_reason(row, day, rests_of.get(row.user_id, ()), by_day,
                    done_of.get(row.habit_id, ()))
            for row, day in zip(rows, days, strict=True)]


def _reason(row: Any, day: date, rests: Sequence[Any], by_day: dict[Any, str],
            done_days: Sequence[date]) -> str | None:
    """Why this row's reminder is not to be sent (None: send it). `rests` are the user's rest
    periods near `day`, `done_days` the habit's days checked in as done."""
    if not row.notifications_enabled:
        return "notifications off"
    if row.is_blocked:
        return "blocked the bot"
    if not row.is_active or row.archived_at is not None:
        return "habit inactive"
    if any(r.starts_on <= day <= r.ends_on and (r.habit_id is None or r.habit_id == row.habit_id)
           for r in rests):
        return "rest"
    if (row.habit_id, day) in by_day:
        return "already checked in"
    if row.frequency == "times_per_week":
        week_start = day - timedelta(days=day.weekday())
        if sum(1 for d in done_days if week_start <= d <= day) >= row.times_per_week:
            return "weekly target met"
    return None


def send_order(user_ids: Sequence[int]) -> list[int]:
    """Positions of `user_ids` in the order to send them: every user's first reminder, then
    every user's second, … (stable otherwise), so one user with many reminders due at once,
    sent at their chat's 1/s, goes after everyone else instead of ahead of them."""
    seen: dict[int, int] = {}
    ranks = []
    for user_id in user_ids:
        ranks.append(seen.get(user_id, 0))
        seen[user_id] = ranks[-1] + 1
    return sorted(range(len(user_ids)), key=lambda position: (ranks[position], position))


def claim_due(engine: Engine, now: datetime | None = None, limit: int = CLAIM_CHUNK,
              max_age: timedelta = MAX_AGE, send_rate: float = 30.0,
              queued_before: int = 0, lease: timedelta = LEASE) -> ClaimResult:
    """Claim up to `limit` due schedules; returns the ids of deliveries to send, in
    `send_order` (due selection is by the minute of `next_fire_at`: a claim moves it to the
    next occurrence, so ticks of any interval within the minute claim a reminder once).

    Each lease covers the delivery's expected wait in the queue (`queued_before` deliveries
    ahead of this chunk, sent at `send_rate` per second), so the reaper does not hand out again
    what is merely waiting its turn."""
    now = now or datetime.now(UTC)
    with Session(engine) as session, session.begin():
        rows = session.execute(
            select(HabitSchedule.id.label("schedule_id"), HabitSchedule.local_time,
                   HabitSchedule.weekdays.label("schedule_weekdays"),
                   HabitSchedule.next_fire_at, Habit.id.label("habit_id"), Habit.is_active,
                   Habit.archived_at, Habit.frequency, Habit.times_per_week, User.id.label(
                       "user_id"), User.timezone, User.day_start_hour,
                   User.notifications_enabled, User.is_blocked)
            .join(Habit, Habit.id == HabitSchedule.habit_id)
            .join(User, User.id == Habit.user_id)
            .where(HabitSchedule.is_enabled, HabitSchedule.next_fire_at.is_not(None),
                   HabitSchedule.next_fire_at <= now)
            .order_by(HabitSchedule.next_fire_at)
            .limit(limit)
            .with_for_update(of=HabitSchedule, skip_locked=True)).all()
        if not rows:
            return ClaimResult(0, [], 0, 0)
        days = [progress.local_day(r.next_fire_at, r.timezone, r.day_start_hour) for r in rows]
        reasons = _batch_skip_reasons(session, rows, days)
        order = send_order([r.user_id for r in rows])
        place = {rows[index].schedule_id: turn for turn, index in enumerate(order)}
        values, advances = [], []
        for row, reason in zip(rows, reasons, strict=True):
            lease_until = now + lease + timedelta(
                seconds=(queued_before + place[row.schedule_id]) / send_rate)
            if reason is None and now - row.next_fire_at > max_age:
                status, reason = "missed", "older than the catch-up window"
            else:
                status = "skipped" if reason else "pending"
            values.append({"schedule_id": row.schedule_id, "habit_id": row.habit_id,
                           "user_id": row.user_id, "fire_at": row.next_fire_at,
                           "status": status, "error": reason,
                           "lease_until": lease_until if status == "pending" else None})
            advances.append({"id": row.schedule_id, "next_fire_at": schedules.next_fire(
                row.timezone, row.local_time, row.schedule_weekdays,
                max(now, row.next_fire_at))})
        inserted = session.execute(
            insert(ReminderDelivery).values(values)
            .on_conflict_do_nothing(index_elements=[ReminderDelivery.schedule_id,
                                                    ReminderDelivery.fire_at])
            .returning(ReminderDelivery.id, ReminderDelivery.status,
                       ReminderDelivery.schedule_id)).all()
        # One statement for the whole chunk (an executemany would be a round trip per row).
        session.execute(text(
            "UPDATE habit_schedules AS s SET next_fire_at = v.next_fire_at "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:fires AS timestamptz[])) "
            "AS v(id, next_fire_at) WHERE s.id = v.id"),
            {"ids": [a["id"] for a in advances], "fires": [a["next_fire_at"] for a in advances]})
    pending = [r.id for r in sorted(inserted, key=lambda r: place[r.schedule_id])
               if r.status == "pending"]
    missed = sum(1 for r in inserted if r.status == "missed")
    skipped = sum(1 for r in inserted if r.status == "skipped")
    return ClaimResult(len(rows), pending, skipped, missed)


def reap_expired(engine: Engine, now: datetime | None = None, max_age: timedelta = MAX_AGE,
                 lease: timedelta = LEASE) -> tuple[list[Dispatch], int]:
    """Deliveries still pending after their lease: hand them out again (new lease), or mark
    them missed when too old or tried too often. Returns (ids to resend, missed count)."""
    now = now or datetime.now(UTC)
    with Session(engine) as session, session.begin():
        rows = session.execute(
            select(ReminderDelivery.id, ReminderDelivery.fire_at, ReminderDelivery.attempts)
            .where(ReminderDelivery.status == "pending", ReminderDelivery.lease_until < now)
            .order_by(ReminderDelivery.lease_until).limit(CLAIM_CHUNK)
            .with_for_update(skip_locked=True)).all()
        fresh = [r for r in rows if now - r.fire_at <= max_age and r.attempts < MAX_ATTEMPTS]
        again = [(r.id, r.attempts) for r in fresh]
        taken = {r.id for r in fresh}
        stale = [r.id for r in rows if r.id not in taken]
        if taken:
            session.execute(update(ReminderDelivery).where(ReminderDelivery.id.in_(taken))
                            .values(lease_until=now + lease))
        if stale:
            session.execute(update(ReminderDelivery).where(ReminderDelivery.id.in_(stale))
                            .values(status="missed", error="not delivered in time"))
    return again, len(stale)


def start_deliveries(bind: Engine | Connection, dispatches: Sequence[Dispatch],
                     now: datetime | None = None, lease: timedelta = LEASE
                     ) -> list[DeliveryJob]:
    """Take a chunk of handed-out deliveries for sending, in one transaction: one locking
    SELECT, the skip reasons with a fixed number of queries, and one UPDATE for those taken
    (attempts + 1, lease renewed) and one per skip reason. A delivery no longer pending, taken
    by another copy of its hand-out (its attempts moved on) or locked by one right now is left
    out; so is one that should be skipped now (checked in meanwhile, blocked, …). The jobs come
    back in the order of `dispatches`."""
    if not dispatches:
        return []
    now = now or datetime.now(UTC)
    expected = dict(dispatches)
    with _transaction(bind) as conn:
        found = conn.execute(
            select(ReminderDelivery.id, ReminderDelivery.fire_at, ReminderDelivery.attempts,
                   Habit.id.label("habit_id"), Habit.name, Habit.kind, Habit.target_value,
                   Habit.target_unit, Habit.is_active, Habit.archived_at, Habit.frequency,
                   Habit.times_per_week, User.id.label("user_id"), User.telegram_id,
                   User.language, User.timezone, User.day_start_hour,
                   User.notifications_enabled, User.is_blocked)
            .join(Habit, Habit.id == ReminderDelivery.habit_id)
            .join(User, User.id == ReminderDelivery.user_id)
            .where(ReminderDelivery.id.in_(list(expected)),
                   ReminderDelivery.status == "pending")
            .with_for_update(of=ReminderDelivery, skip_locked=True)).all()
        rows = [r for r in found if r.attempts == expected[r.id]]
        if not rows:
            return []
        days = [progress.local_day(r.fire_at, r.timezone, r.day_start_hour) for r in rows]
        reasons = _batch_skip_reasons(conn, rows, days)
        skipped: dict[str, list[int]] = {}
        jobs: dict[int, DeliveryJob] = {}
        for row, day, reason in zip(rows, days, reasons, strict=True):
            if reason is not None:
                skipped.setdefault(reason, []).append(row.id)
                continue
            jobs[row.id] = DeliveryJob(row.id, row.fire_at, row.telegram_id, row.language,
                                       row.timezone, row.habit_id, row.name, row.kind,
                                       row.target_value, row.target_unit, day)
        for reason, ids in skipped.items():
            conn.execute(update(ReminderDelivery).where(ReminderDelivery.id.in_(ids))
                         .values(status="skipped", error=reason, lease_until=None))
        if jobs:
            conn.execute(update(ReminderDelivery).where(ReminderDelivery.id.in_(list(jobs)))
                         .values(attempts=ReminderDelivery.attempts + 1,
                                 lease_until=now + lease))
    return [jobs[delivery_id] for delivery_id, _ in dispatches if delivery_id in jobs]


def start_delivery(bind: Engine | Connection, delivery_id: int, expected_attempts: int = 0,
                   now: datetime | None = None, lease: timedelta = LEASE
                   ) -> DeliveryJob | None:
    """`start_deliveries` for one delivery: the job, or None if it is not to be sent."""
    jobs = start_deliveries(bind, [(delivery_id, expected_attempts)], now, lease)
    return jobs[0] if jobs else None


def finish_delivery(bind: Engine | Connection, delivery_id: int, status: str,
                    message_id: int | None = None, error: str | None = None) -> bool:
    """pending → sent / failed; False if it was no longer pending (nothing changed). Pass a
    held Connection to save a pool checkout per message; each call commits on its own, so a
    worker killed after a send loses at most that one mark (the at-least-once window)."""
    if status not in ("sent", "failed"):
        raise ValueError(status)
    with _transaction(bind, single_statement=True) as conn:
        done = conn.execute(_FINISH, {
            "id": delivery_id, "status": status, "message_id": message_id, "error": error,
            "sent_at": datetime.now(UTC) if status == "sent" else None}).first()
    return done is not None


# Built once: this runs once per reminder sent, and building the statement each time costs
# more CPU than running it.
_FINISH = text(
    "UPDATE reminder_deliveries SET status = :status, telegram_message_id = :message_id, "
    "error = :error, sent_at = :sent_at, lease_until = NULL "
    "WHERE id = :id AND status = 'pending' RETURNING id")


def renew_leases(bind: Engine | Connection, delivery_ids: Sequence[int],
                 now: datetime | None = None, lease: timedelta = LEASE) -> None:
    """Still working on these (started, not yet sent): keep the reaper off them."""
    if not delivery_ids:
        return
    now = now or datetime.now(UTC)
    with _transaction(bind, single_statement=True) as conn:
        conn.execute(update(ReminderDelivery).where(
            ReminderDelivery.id.in_(list(delivery_ids)), ReminderDelivery.status == "pending")
            .values(lease_until=now + lease))


def release_delivery(bind: Engine | Connection, delivery_id: int, error: str) -> None:
    """A transient failure: leave it pending with an expired lease so the reaper retries."""
    with _transaction(bind, single_statement=True) as conn:
        conn.execute(update(ReminderDelivery).where(
            ReminderDelivery.id == delivery_id, ReminderDelivery.status == "pending")
            .values(error=error[:500], lease_until=datetime.now(UTC)))


@contextmanager
def _transaction(bind: Engine | Connection, single_statement: bool = False
                 ) -> Iterator[Connection]:
    """A transaction on a fresh pooled connection (Engine) or on a held one (Connection). A
    held connection in autocommit serves only a single statement, which is its own
    transaction."""
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            yield conn
        return
    if bind.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        if not single_statement:
            raise ValueError("several statements need a transaction, not autocommit")
        yield bind
        return
    if bind.in_transaction():
        bind.rollback()
    with bind.begin():
        yield bind


def local_fire_time(job: DeliveryJob) -> str:
    return job.fire_at.astimezone(ZoneInfo(job.timezone)).strftime("%H:%M")
