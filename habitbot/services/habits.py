"""Habits: create, edit, pause, archive, delete, reorder; their reminder schedules; check-ins.

Every function takes the owner's user id and touches only that user's rows: asking for someone
else's habit is the same as asking for one that does not exist (`HabitNotFound`). Schedules
keep `next_fire_at` in UTC, recomputed from the owner's IANA zone on every change of the
schedule, the zone, or the habit's state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from habitbot.models import Habit, HabitCheckin, HabitSchedule, User
from habitbot.models.habits import ALL_WEEKDAYS
from habitbot.services import schedules

NAME_MAX = 100
UNIT_MAX = 32
TARGET_MAX = Decimal("1000000")
MAX_REMINDERS = 5
FREE_ACTIVE_HABITS = 3
# Of one user, active or archived, on any plan: /new, the one-message /new and imports alike.
MAX_HABITS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


class HabitError(ValueError):
    """A refusal the user should read; `code` selects the translated message."""

    def __init__(self, code: str, **params: object):
        super().__init__(code)
        self.code = code
        self.params = params


class HabitNotFound(HabitError):
    def __init__(self) -> None:
        super().__init__("not_found")


@dataclass
class HabitDraft:
    name: str
    kind: str = "boolean"
    target_value: Decimal | None = None
    target_unit: str | None = None
    target_direction: str = "at_least"
    frequency: str = "daily"
    weekdays: int = ALL_WEEKDAYS
    times_per_week: int = 7
    reminder_times: list[time] = field(default_factory=list)


@dataclass(frozen=True)
class HabitView:
    id: int
    name: str
    kind: str
    target_value: Decimal | None
    target_unit: str | None
    target_direction: str
    frequency: str
    weekdays: int
    times_per_week: int
    is_active: bool
    archived: bool
    archived_at: datetime | None
    paused_at: datetime | None
    position: int
    created_at: datetime
    reminder_times: tuple[time, ...]


# -- validation ----------------------------------------------------------------------------
def clean_name(raw: str | None) -> str:
    name = _CONTROL.sub("", raw or "").strip()
    name = re.sub(r"\s+", " ", name)
    if not name:
        raise HabitError("name_empty")
    if len(name) > NAME_MAX:
        raise HabitError("name_too_long", limit=NAME_MAX)
    return name


def clean_unit(raw: str | None) -> str | None:
    unit = _CONTROL.sub("", raw or "").strip()
    if len(unit) > UNIT_MAX:
        raise HabitError("unit_too_long", limit=UNIT_MAX)
    return unit or None


def parse_amount(raw: str) -> Decimal:
    """A positive number people type: '20', '2.5', '2,5'."""
    try:
        value = Decimal(raw.strip().replace(",", "."))
    except (InvalidOperation, AttributeError):
        raise HabitError("target_not_a_number") from None
    if not value.is_finite() or value <= 0:
        raise HabitError("target_not_positive")
    if value > TARGET_MAX or value.as_tuple().exponent < -3:  # type: ignore[operator]
        raise HabitError("target_out_of_range")
    return value


def validate(draft: HabitDraft) -> HabitDraft:
    draft.name = clean_name(draft.name)
    draft.target_unit = clean_unit(draft.target_unit)
    if draft.kind not in ("boolean", "measurable"):
        raise HabitError("bad_kind")
    if draft.kind == "measurable":
        if draft.target_value is None or draft.target_value <= 0:
            raise HabitError("target_not_positive")
    else:
        draft.target_value, draft.target_unit, draft.target_direction = None, None, "at_least"
    if draft.target_direction not in ("at_least", "at_most"):
        raise HabitError("bad_direction")
    if draft.frequency not in ("daily", "weekdays", "times_per_week"):
        raise HabitError("bad_frequency")
    if not 1 <= draft.weekdays <= ALL_WEEKDAYS:
        raise HabitError("weekdays_empty")
    if not 1 <= draft.times_per_week <= 7:
        raise HabitError("times_per_week_range")
    if draft.frequency == "daily":
        draft.weekdays, draft.times_per_week = ALL_WEEKDAYS, 7
    elif draft.frequency == "times_per_week":
        draft.weekdays = ALL_WEEKDAYS
    draft.reminder_times = sorted(set(draft.reminder_times))
    if len(draft.reminder_times) > MAX_REMINDERS:
        raise HabitError("too_many_reminders", limit=MAX_REMINDERS)
    return draft


# -- reading -------------------------------------------------------------------------------
def _view(habit: Habit, times: list[time]) -> HabitView:
    return HabitView(habit.id, habit.name, habit.kind, habit.target_value, habit.target_unit,
                     habit.target_direction, habit.frequency, habit.weekdays,
                     habit.times_per_week, habit.is_active, habit.archived_at is not None,
                     habit.archived_at, habit.paused_at, habit.position, habit.created_at,
                     tuple(sorted(times)))


def _times(conn: Session, habit_ids: list[int]) -> dict[int, list[time]]:
    out: dict[int, list[time]] = {hid: [] for hid in habit_ids}
    if habit_ids:
        rows = conn.execute(select(HabitSchedule.habit_id, HabitSchedule.local_time)
                            .where(HabitSchedule.habit_id.in_(habit_ids)))
        for habit_id, local_time in rows:
            out[habit_id].append(local_time)
    return out


def list_habits(engine: Engine, user_id: int, include_archived: bool = False) -> list[HabitView]:
    with Session(engine, expire_on_commit=False) as conn:
        query = select(Habit).where(Habit.user_id == user_id)
        if not include_archived:
            query = query.where(Habit.archived_at.is_(None))
        habits = conn.execute(query.order_by(Habit.position, Habit.id)).scalars().all()
        times = _times(conn, [h.id for h in habits])
    return [_view(h, times[h.id]) for h in habits]


def _owned(conn: Session, user_id: int, habit_id: int, lock: bool = False) -> Habit:
    """The user's habit; with `lock`, its schedule rows are locked first and then the habit,
    the order the reminder claim takes them in (schedules, then the habit's key for the
    delivery's foreign key): the other order deadlocks with a tick claiming this habit."""
    query = select(Habit).where(Habit.id == habit_id, Habit.user_id == user_id)
    if lock:
        conn.execute(select(HabitSchedule.id).where(HabitSchedule.habit_id == habit_id)
                     .order_by(HabitSchedule.id).with_for_update())
        query = query.with_for_update()
    habit = conn.execute(query).scalars().first()
    if habit is None:
        raise HabitNotFound()
    return habit


def get_habit(engine: Engine, user_id: int, habit_id: int) -> HabitView:
    with Session(engine, expire_on_commit=False) as conn:
        habit = _owned(conn, user_id, habit_id)
        return _view(habit, _times(conn, [habit.id])[habit.id])


# -- schedules -----------------------------------------------------------------------------
def _user_zone(conn: Session, user_id: int) -> str:
    return conn.execute(select(User.timezone).where(User.id == user_id)).scalar_one()


def _replace_schedules(conn: Session, habit: Habit, times: list[time], zone: str,
                       now: datetime) -> None:
    conn.execute(delete(HabitSchedule).where(HabitSchedule.habit_id == habit.id))
    for local_time in times:
        conn.execute(insert(HabitSchedule).values(
            habit_id=habit.id, local_time=local_time, weekdays=habit.weekdays,
            is_enabled=True, next_fire_at=_next(habit, zone, local_time, habit.weekdays, now)))


def _next(habit: Habit, zone: str, local_time: time, weekdays: int,
          now: datetime) -> datetime | None:
    if not habit.is_active or habit.archived_at is not None:
        return None
    return schedules.next_fire(zone, local_time, weekdays, now)


def recompute_user_schedules(conn: Session, user_id: int, now: datetime | None = None) -> int:
    """After a timezone change (or a resume): every schedule's next fire time from the zone."""
    now = now or datetime.now(UTC)
    zone = _user_zone(conn, user_id)
    rows = conn.execute(
        select(HabitSchedule, Habit).join(Habit, Habit.id == HabitSchedule.habit_id)
        .where(Habit.user_id == user_id)).all()
    for schedule, habit in rows:
        conn.execute(update(HabitSchedule).where(HabitSchedule.id == schedule.id).values(
            next_fire_at=_next(habit, zone, schedule.local_time, schedule.weekdays, now)))
    return len(rows)


# -- writing -------------------------------------------------------------------------------
def _is_premium(conn: Session, user_id: int, now: datetime) -> bool:
    row = conn.execute(select(User.tier, User.premium_ends_at, User.trial_ends_at)
                       .where(User.id == user_id)).one()
    return bool((row.premium_ends_at and row.premium_ends_at > now)
                or (row.trial_ends_at and row.trial_ends_at > now))


def check_limits(conn: Session, user_id: int, draft: HabitDraft, now: datetime,
                  adding: bool) -> None:
    if _is_premium(conn, user_id, now):
        return
    if len(draft.reminder_times) > 1:
        raise HabitError("several_reminders_premium")
    if adding:
        active = conn.execute(select(func.count()).select_from(Habit).where(
            Habit.user_id == user_id, Habit.archived_at.is_(None))).scalar_one()
        if active >= FREE_ACTIVE_HABITS:
            raise HabitError("free_limit", limit=FREE_ACTIVE_HABITS)


def check_total(conn: Session, user_id: int) -> None:
    """Before a new habit, on every plan (restoring one does not add to the total)."""
    have = conn.execute(select(func.count()).select_from(Habit)
                        .where(Habit.user_id == user_id)).scalar_one()
    if have >= MAX_HABITS:
        raise HabitError("too_many_habits", limit=MAX_HABITS)


def create_habit(engine: Engine, user_id: int, draft: HabitDraft,
                 now: datetime | None = None) -> HabitView:
    now = now or datetime.now(UTC)
    draft = validate(draft)
    with Session(engine, expire_on_commit=False) as conn, conn.begin():
        # Serialise creations of one user so two quick /new cannot pass the limit together.
        # NO KEY UPDATE: it does not block a reminder claim's foreign-key check on the user.
        conn.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))
        check_total(conn, user_id)
        check_limits(conn, user_id, draft, now, adding=True)
        position = conn.execute(select(func.coalesce(func.max(Habit.position), 0) + 1)
                                .where(Habit.user_id == user_id)).scalar_one()
        habit = conn.execute(insert(Habit).values(
            user_id=user_id, name=draft.name, kind=draft.kind, target_value=draft.target_value,
            target_unit=draft.target_unit, target_direction=draft.target_direction,
            frequency=draft.frequency, weekdays=draft.weekdays,
            times_per_week=draft.times_per_week, position=position,
        ).returning(Habit)).scalars().one()
        _replace_schedules(conn, habit, draft.reminder_times, _user_zone(conn, user_id), now)
        return _view(habit, draft.reminder_times)


def rename_habit(engine: Engine, user_id: int, habit_id: int, name: str) -> HabitView:
    clean = clean_name(name)
    with Session(engine, expire_on_commit=False) as conn, conn.begin():
        habit = _owned(conn, user_id, habit_id, lock=True)
        conn.execute(update(Habit).where(Habit.id == habit.id).values(name=clean))
    return get_habit(engine, user_id, habit_id)


def set_schedule(engine: Engine, user_id: int, habit_id: int, frequency: str, weekdays: int,
                 times_per_week: int, reminder_times: list[time],
                 now: datetime | None = None) -> HabitView:
    now = now or datetime.now(UTC)
    with Session(engine, expire_on_commit=False) as conn, conn.begin():
        habit = _owned(conn, user_id, habit_id, lock=True)
        draft = validate(HabitDraft(habit.name, habit.kind, habit.target_value,
                                    habit.target_unit, habit.target_direction, frequency,
                                    weekdays, times_per_week, reminder_times))
        check_limits(conn, user_id, draft, now, adding=False)
        habit = conn.execute(update(Habit).where(Habit.id == habit.id).values(
            frequency=draft.frequency, weekdays=draft.weekdays,
            times_per_week=draft.times_per_week).returning(Habit)).scalars().one()
        _replace_schedules(conn, habit, draft.reminder_times, _user_zone(conn, user_id), now)
    return get_habit(engine, user_id, habit_id)


def set_target(engine: Engine, user_id: int, habit_id: int, value: Decimal,
               unit: str | None, direction: str) -> HabitView:
    with Session(engine, expire_on_commit=False) as conn, conn.begin():
        habit = _owned(conn, user_id, habit_id, lock=True)
        if habit.kind != "measurable":
            raise HabitError("bad_kind")
        if value <= 0:
            raise HabitError("target_not_positive")
        if direction not in ("at_least", "at_most"):
            raise HabitError("bad_direction")
        conn.execute(update(Habit).where(Habit.id == habit.id).values(
            target_value=value, target_unit=clean_unit(unit), target_direction=direction))
    return get_habit(engine, user_id, habit_id)


def _set_state(engine: Engine, user_id: int, habit_id: int, now: datetime | None,
               **values: object) -> HabitView:
    now = now or datetime.now(UTC)
    with Session(engine, expire_on_commit=False) as conn, conn.begin():
        habit = _owned(conn, user_id, habit_id, lock=True)
        for since in ("paused_at", "archived_at"):
            if values.get(since) is not None and getattr(habit, since) is not None:
                # Pausing a paused habit (archiving an archived one) changes nothing: it stays
                # paused since when it was, and its days stay counted as they were.
                values[since] = getattr(habit, since)
        if values.get("archived_at", habit.archived_at) is None and \
                habit.archived_at is not None:
            # Restoring counts against the free limit like creating.
            draft = HabitDraft(habit.name)
            check_limits(conn, user_id, draft, now, adding=True)
        habit = conn.execute(update(Habit).where(Habit.id == habit.id).values(**values)
                             .returning(Habit)).scalars().one()
        zone = _user_zone(conn, user_id)
        for schedule in conn.execute(select(HabitSchedule).where(
                HabitSchedule.habit_id == habit.id)).scalars():
            conn.execute(update(HabitSchedule).where(HabitSchedule.id == schedule.id).values(
                next_fire_at=_next(habit, zone, schedule.local_time, schedule.weekdays, now)))
    return get_habit(engine, user_id, habit_id)


def pause_habit(engine: Engine, user_id: int, habit_id: int,
                now: datetime | None = None) -> HabitView:
    now = now or datetime.now(UTC)
    return _set_state(engine, user_id, habit_id, now, is_active=False, paused_at=now)


def resume_habit(engine: Engine, user_id: int, habit_id: int,
                 now: datetime | None = None) -> HabitView:
    return _set_state(engine, user_id, habit_id, now, is_active=True, paused_at=None)


def archive_habit(engine: Engine, user_id: int, habit_id: int,
                  now: datetime | None = None) -> HabitView:
    now = now or datetime.now(UTC)
    return _set_state(engine, user_id, habit_id, now, archived_at=now, is_active=False)


def restore_habit(engine: Engine, user_id: int, habit_id: int,
                  now: datetime | None = None) -> HabitView:
    return _set_state(engine, user_id, habit_id, now, archived_at=None, is_active=True,
                      paused_at=None)


def delete_habit(engine: Engine, user_id: int, habit_id: int) -> None:
    with Session(engine, expire_on_commit=False) as conn, conn.begin():
        _owned(conn, user_id, habit_id, lock=True)
        conn.execute(delete(Habit).where(Habit.id == habit_id, Habit.user_id == user_id))


def move_habit(engine: Engine, user_id: int, habit_id: int, offset: int) -> list[HabitView]:
    """Move a habit up (offset -1) or down (+1) in the user's list."""
    with Session(engine, expire_on_commit=False) as conn, conn.begin():
        _owned(conn, user_id, habit_id, lock=True)
        ids = conn.execute(select(Habit.id).where(Habit.user_id == user_id,
                                                  Habit.archived_at.is_(None))
                           .order_by(Habit.position, Habit.id)).scalars().all()
        order = list(ids)
        if habit_id in order:
            index = order.index(habit_id)
            target = max(0, min(len(order) - 1, index + offset))
            order.insert(target, order.pop(index))
        for position, hid in enumerate(order, start=1):
            conn.execute(update(Habit).where(Habit.id == hid).values(position=position))
    return list_habits(engine, user_id)


# -- check-ins -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckinResult:
    habit: HabitView
    day: date
    status: str
    value: Decimal | None
    created: bool  # False: there already was one for that day (a double tap changes nothing)
    checked_at: datetime  # when the stored check-in was made (the first one, on a double tap)


def check_in(engine: Engine, user_id: int, habit_id: int, day: date, status: str = "done",
             value: Decimal | None = None, source: str = "command",
             now: datetime | None = None) -> CheckinResult:
    """One check-in per habit per local day; the database refuses a second."""
    now = now or datetime.now(UTC)
    if status not in ("done", "skipped"):
        raise HabitError("bad_status")
    if value is not None and (not value.is_finite() or value < 0 or value > TARGET_MAX):
        raise HabitError("value_out_of_range")
    with Session(engine, expire_on_commit=False) as conn, conn.begin():
        habit = _owned(conn, user_id, habit_id)
        if habit.archived_at is not None:
            raise HabitError("archived")
        if habit.kind == "measurable" and status == "done" and value is None:
            value = habit.target_value
        inserted = conn.execute(insert(HabitCheckin).values(
            habit_id=habit.id, user_id=user_id, local_date=day, status=status, value=value,
            source=source, created_at=now).on_conflict_do_nothing(
            index_elements=[HabitCheckin.habit_id, HabitCheckin.local_date])
            .returning(HabitCheckin.id)).first()
        row = conn.execute(select(HabitCheckin.status, HabitCheckin.value,
                                  HabitCheckin.created_at).where(
            HabitCheckin.habit_id == habit.id, HabitCheckin.local_date == day)).one()
        view = _view(habit, _times(conn, [habit.id])[habit.id])
    return CheckinResult(view, day, row.status, row.value, created=inserted is not None,
                         checked_at=row.created_at)


def undo_check_in(engine: Engine, user_id: int, habit_id: int, day: date) -> bool:
    with Session(engine, expire_on_commit=False) as conn, conn.begin():
        _owned(conn, user_id, habit_id)
        removed = conn.execute(delete(HabitCheckin).where(
            HabitCheckin.habit_id == habit_id, HabitCheckin.user_id == user_id,
            HabitCheckin.local_date == day).returning(HabitCheckin.id)).first()
    return removed is not None


def checkins_for_day(engine: Engine, user_id: int,
                     day: date) -> dict[int, tuple[str, Decimal | None]]:
    with Session(engine, expire_on_commit=False) as conn:
        rows = conn.execute(select(HabitCheckin.habit_id, HabitCheckin.status,
                                   HabitCheckin.value)
                            .where(HabitCheckin.user_id == user_id,
                                   HabitCheckin.local_date == day))
        return {r.habit_id: (r.status, r.value) for r in rows}
