"""Load a user's habits, check-ins and rest periods and hand them to `progress` — the one
place every number of /stats, /today and the summaries comes from."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from habitbot.models import HabitCheckin, RestPeriod, User
from habitbot.services import habits as habits_svc
from habitbot.services import progress
from habitbot.services.habits import HabitView


@dataclass(frozen=True)
class HabitStats:
    habit: HabitView
    spec: progress.HabitSpec
    checkins: tuple[progress.Checkin, ...]
    rest: tuple[progress.DateRange, ...]
    summary: progress.Progress


def start_day(habit: HabitView, zone: str, day_start_hour: int = 0) -> date:
    """The user's day the habit was created on (their zone, their day-start hour)."""
    return progress.local_day(habit.created_at, zone, day_start_hour)


def spec_of(habit: HabitView, zone: str, day_start_hour: int = 0) -> progress.HabitSpec:
    def local(instant: datetime | None) -> date | None:
        return progress.local_day(instant, zone, day_start_hour) if instant else None

    paused_from = local(habit.paused_at)
    return progress.HabitSpec(
        start=start_day(habit, zone, day_start_hour), kind=habit.kind,  # type: ignore[arg-type]
        target_value=habit.target_value,
        target_direction=habit.target_direction,  # type: ignore[arg-type]
        frequency=habit.frequency, weekdays=habit.weekdays,  # type: ignore[arg-type]
        times_per_week=habit.times_per_week, archived_on=local(habit.archived_at),
        paused_ranges=((paused_from, None),) if paused_from and not habit.archived else ())


def user_stats(engine: Engine, user_id: int, today: date,
               include_archived: bool = False) -> list[HabitStats]:
    habits = habits_svc.list_habits(engine, user_id, include_archived=include_archived)
    with Session(engine) as session:
        zone, day_start_hour = session.execute(select(User.timezone, User.day_start_hour)
                                               .where(User.id == user_id)).one()
        rows = session.execute(select(HabitCheckin.habit_id, HabitCheckin.local_date,
                                      HabitCheckin.status, HabitCheckin.value)
                               .where(HabitCheckin.user_id == user_id)).all()
        rests = session.execute(select(RestPeriod.habit_id, RestPeriod.starts_on,
                                       RestPeriod.ends_on)
                                .where(RestPeriod.user_id == user_id)).all()
    by_habit: dict[int, list[progress.Checkin]] = defaultdict(list)
    for row in rows:
        by_habit[row.habit_id].append(progress.Checkin(row.local_date, row.status, row.value))
    out: list[HabitStats] = []
    for habit in habits:
        spec = spec_of(habit, zone, day_start_hour)
        rest = tuple((r.starts_on, r.ends_on) for r in rests
                     if r.habit_id is None or r.habit_id == habit.id)
        checkins = tuple(sorted(by_habit[habit.id], key=lambda c: c.day))
        out.append(HabitStats(habit, spec, checkins, rest,
                              progress.summarize(spec, checkins, rest, today)))
    return out


# -- rest periods ----------------------------------------------------------------------------
def start_rest(engine: Engine, user_id: int, starts_on: date, ends_on: date) -> None:
    """All habits rest: no reminders, streaks kept. Replaces a rest already planned."""
    if ends_on < starts_on:
        raise ValueError("a rest cannot end before it starts")
    with Session(engine) as session, session.begin():
        session.execute(delete(RestPeriod).where(
            RestPeriod.user_id == user_id, RestPeriod.habit_id.is_(None),
            RestPeriod.ends_on >= starts_on))
        session.add(RestPeriod(user_id=user_id, starts_on=starts_on, ends_on=ends_on))


def end_rest(engine: Engine, user_id: int, today: date) -> bool:
    """Stop a rest now: it ends yesterday (today counts again); False if none is running."""
    with Session(engine) as session, session.begin():
        running = session.execute(select(RestPeriod).where(
            RestPeriod.user_id == user_id, RestPeriod.habit_id.is_(None),
            RestPeriod.starts_on <= today, RestPeriod.ends_on >= today)).scalars().all()
        for period in running:
            if period.starts_on == today:
                session.delete(period)
            else:
                period.ends_on = today - timedelta(days=1)
        session.execute(delete(RestPeriod).where(
            RestPeriod.user_id == user_id, RestPeriod.habit_id.is_(None),
            RestPeriod.starts_on > today))
    return bool(running)


def current_rest(engine: Engine, user_id: int, today: date) -> tuple[date, date] | None:
    with Session(engine) as session:
        row = session.execute(select(RestPeriod.starts_on, RestPeriod.ends_on).where(
            RestPeriod.user_id == user_id, RestPeriod.habit_id.is_(None),
            RestPeriod.ends_on >= today).order_by(RestPeriod.starts_on)).first()
    return (row.starts_on, row.ends_on) if row else None
