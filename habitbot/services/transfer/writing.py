"""Writing a parsed file into a user's account, all or nothing.

Habits are matched to the user's existing ones by name (case-insensitive) and existing
check-ins are never overwritten, so importing the same file twice changes nothing the second
time. A user has at most `MAX_HABITS` habits and `MAX_USER_CHECKINS` check-ins after an
import (what their statistics and exports are computed from): a file that would take them past
either is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from habitbot.models import Habit, HabitCheckin, HabitSchedule, RestPeriod, User
from habitbot.services import schedules
from habitbot.services.habits import HabitDraft, HabitError, check_limits, validate
from habitbot.services.progress import local_day
from habitbot.services.transfer import reading
from habitbot.services.transfer.incoming import Incoming, Report
from habitbot.services.transfer.limits import (
    MAX_FILE_BYTES,
    MAX_HABITS,
    MAX_USER_CHECKINS,
    MB,
    Budget,
    TransferError,
)

_INSERT_CHUNK = 1000


@dataclass(frozen=True)
class ImportSummary:
    habits_created: int
    habits_matched: int
    checkins_imported: int
    checkins_skipped_existing: int
    rows_ignored: int
    warnings: list[str] = field(default_factory=list)


def _screen(habits: list[Incoming], today: date, report: Report) -> list[Incoming]:
    """Drop what we cannot store: invalid habits (with their rows) and future check-ins."""
    kept = []
    for habit in habits:
        try:
            validate(habit.draft)
        except HabitError as exc:
            code = "invalid_names" if exc.code.startswith("name_") else "invalid_habits"
            report.ignore(code, len(habit.checkins))
            continue
        future = [day for day in habit.checkins if day > today]
        for day in future:
            del habit.checkins[day]
        if future:
            report.ignore("future_dates", len(future))
        kept.append(habit)
    if not kept:
        raise TransferError("empty")
    return kept


def _start_of(day: date, zone: str, day_start_hour: int) -> datetime:
    """The instant the user's `day` begins: its day-start hour, local wall-clock time."""
    return datetime.combine(day, time(day_start_hour), tzinfo=ZoneInfo(zone)).astimezone(UTC)


@dataclass
class _Target:
    id: int
    kind: str
    target_value: Decimal | None
    created_at: datetime


def _create(conn: Session, user_id: int, habit: Incoming, position: int, zone: str,
            day_start_hour: int, now: datetime, report: Report) -> _Target:
    draft = habit.draft
    try:
        check_limits(conn, user_id, HabitDraft(draft.name, reminder_times=draft.reminder_times),
                      now, adding=False)
    except HabitError:
        draft.reminder_times = draft.reminder_times[:1]
        report.warn("reminders_trimmed")
    archived = habit.archived
    if not archived:
        try:
            check_limits(conn, user_id, HabitDraft(draft.name), now, adding=True)
        except HabitError:
            archived = True
            report.warn("archived_over_free_limit")
    active = not (archived or habit.paused)
    created_at = habit.created_at or (
        _start_of(min(habit.checkins), zone, day_start_hour) if habit.checkins else now)
    archived_at = habit.archived_at if habit.archived and habit.archived_at else now
    paused_at = (habit.paused_at or now) if habit.paused or habit.archived else None
    row = conn.execute(insert(Habit).values(
        user_id=user_id, name=draft.name, kind=draft.kind, target_value=draft.target_value,
        target_unit=draft.target_unit, target_direction=draft.target_direction,
        frequency=draft.frequency, weekdays=draft.weekdays, times_per_week=draft.times_per_week,
        is_active=active, archived_at=min(archived_at, now) if archived else None,
        paused_at=min(paused_at, now) if paused_at else None, position=position,
        created_at=min(created_at, now),
    ).returning(Habit.id, Habit.kind, Habit.target_value, Habit.created_at)).one()
    for local_time in draft.reminder_times:
        next_fire = schedules.next_fire(zone, local_time, draft.weekdays, now) if active else None
        conn.execute(insert(HabitSchedule).values(habit_id=row.id, local_time=local_time,
                                                  weekdays=draft.weekdays, is_enabled=True,
                                                  next_fire_at=next_fire))
    return _Target(row.id, row.kind, row.target_value, row.created_at)


def _backdate(conn: Session, target: _Target, first_day: date, zone: str,
              day_start_hour: int) -> None:
    """An existing habit that receives older history starts on its first imported day."""
    if first_day < local_day(target.created_at, zone, day_start_hour):
        target.created_at = _start_of(first_day, zone, day_start_hour)
        conn.execute(update(Habit).where(Habit.id == target.id)
                     .values(created_at=target.created_at))


def _checkin_row(user_id: int, target: _Target, day: date, status: str,
                 value: Decimal | None) -> dict[str, object]:
    if status == "skipped" or target.kind == "boolean":
        value = None
    elif value is None:
        value = target.target_value
    return dict(habit_id=target.id, user_id=user_id, local_date=day, status=status, value=value,
                source="import")


def _insert_rests(conn: Session, user_id: int,
                  periods: set[tuple[int | None, date, date]]) -> None:
    have = {(r.habit_id, r.starts_on, r.ends_on) for r in conn.execute(
        select(RestPeriod.habit_id, RestPeriod.starts_on, RestPeriod.ends_on)
        .where(RestPeriod.user_id == user_id))}
    for habit_id, starts_on, ends_on in sorted(periods - have, key=lambda p: (p[0] or 0, p[1:])):
        conn.execute(insert(RestPeriod).values(user_id=user_id, habit_id=habit_id,
                                               starts_on=starts_on, ends_on=ends_on))


def _write(conn: Session, user_id: int, zone: str, day_start_hour: int, habits: list[Incoming],
           rests: list[tuple[date, date]], now: datetime, report: Report) -> ImportSummary:
    existing: dict[str, _Target] = {}
    for h in conn.execute(select(Habit).where(Habit.user_id == user_id)
                          .order_by(Habit.position, Habit.id)).scalars():
        existing.setdefault(h.name.casefold(),
                            _Target(h.id, h.kind, h.target_value, h.created_at))
    before = set(existing)
    _check_total(conn, user_id, {h.draft.name.casefold() for h in habits} - before)
    position = conn.execute(select(func.coalesce(func.max(Habit.position), 0))
                            .where(Habit.user_id == user_id)).scalar_one()
    created, matched = 0, set()
    rows: dict[tuple[int, date], dict[str, object]] = {}
    periods: set[tuple[int | None, date, date]] = {(None, *r) for r in rests}
    repeated = 0
    for habit in habits:
        key = habit.draft.name.casefold()
        if key not in existing:
            position, created = position + 1, created + 1
            existing[key] = _create(conn, user_id, habit, position, zone, day_start_hour, now,
                                    report)
        elif key in before:
            matched.add(key)
            if habit.checkins:
                _backdate(conn, existing[key], min(habit.checkins), zone, day_start_hour)
        else:
            report.warn("duplicate_names_merged")
        target = existing[key]
        periods.update((target.id, *r) for r in habit.rest_periods)
        for day, (status, value) in habit.checkins.items():
            if (target.id, day) in rows:
                repeated += 1
            else:
                rows[(target.id, day)] = _checkin_row(user_id, target, day, status, value)
    imported = _insert_checkins(conn, list(rows.values()))
    if imported:
        _check_checkins_total(conn, user_id)
    _insert_rests(conn, user_id, periods)
    return ImportSummary(created, len(matched), imported, len(rows) - imported + repeated,
                         report.rows_ignored, list(report.warnings))


def _check_total(conn: Session, user_id: int, new_names: set[str]) -> None:
    have = conn.execute(select(func.count()).select_from(Habit)
                        .where(Habit.user_id == user_id)).scalar_one()
    if have + len(new_names) > MAX_HABITS:
        raise TransferError("too_many_habits_total", MAX_HABITS)


def _check_checkins_total(conn: Session, user_id: int) -> None:
    """After the insert (so in its transaction: a refusal rolls it back)."""
    have = conn.execute(select(func.count()).select_from(HabitCheckin)
                        .where(HabitCheckin.user_id == user_id)).scalar_one()
    if have > MAX_USER_CHECKINS:
        raise TransferError("too_many_checkins_total", MAX_USER_CHECKINS)


def _insert_checkins(conn: Session, rows: list[dict[str, object]]) -> int:
    inserted = 0
    for start in range(0, len(rows), _INSERT_CHUNK):
        result = conn.execute(insert(HabitCheckin).values(rows[start:start + _INSERT_CHUNK])
                              .on_conflict_do_nothing(index_elements=[HabitCheckin.habit_id,
                                                                      HabitCheckin.local_date])
                              .returning(HabitCheckin.id))
        inserted += len(result.all())
    return inserted


def import_file(engine: Engine, user_id: int, filename: str, data: bytes,
                now: datetime | None = None, budget: Budget | None = None) -> ImportSummary:
    """Import a file the user sent: our JSON or CSV export, or Loop Habit Tracker's CSV export
    (the ZIP, or its Habits.csv / Checkmarks.csv alone). Raises `TransferError` and writes
    nothing when the file is refused."""
    if len(data) > MAX_FILE_BYTES:
        raise TransferError("too_large", MAX_FILE_BYTES // MB)
    now = now or datetime.now(UTC)
    report = Report(budget or Budget())
    parsed = reading.parse(filename, data, report)
    with Session(engine, expire_on_commit=False) as conn, conn.begin():
        # Serialise with habit creation so the free limit holds across both.
        user = conn.execute(select(User.timezone, User.day_start_hour)
                            .where(User.id == user_id).with_for_update(key_share=True)).one()
        today = local_day(now, user.timezone, user.day_start_hour)
        habits = _screen(parsed.habits, today, report)
        return _write(conn, user_id, user.timezone, user.day_start_hour, habits,
                      parsed.rest_periods, now, report)
