"""Weekly summaries: on the user's chosen weekday, in the evening of their own zone.

Due users are found per zone (the zones where it is now the summary hour, grouped by their
local weekday) through `ix_users_summary_zone`, not by scanning every user; each user's week is
claimed with one conditional UPDATE, so two runs never send the same summary twice.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, or_, update
from sqlalchemy.orm import Session

from habitbot.models import User
from habitbot.services import progress
from habitbot.services.stats import HabitStats, user_stats

SUMMARY_HOUR = 19


@dataclass(frozen=True)
class SummaryTarget:
    user_id: int
    telegram_id: int
    language: str
    local_day: date


def zones_at_hour(now: datetime, hour: int = SUMMARY_HOUR) -> dict[int, list[str]]:
    """{local weekday: [zones where the local time is now within `hour`]}."""
    out: dict[int, list[str]] = {}
    for name in zoneinfo.available_timezones():
        local = now.astimezone(zoneinfo.ZoneInfo(name))
        if local.hour == hour:
            out.setdefault(local.weekday(), []).append(name)
    return out


def claim_due(engine: Engine, now: datetime | None = None,
              hour: int = SUMMARY_HOUR) -> list[SummaryTarget]:
    now = now or datetime.now(UTC)
    groups = zones_at_hour(now, hour)
    if not groups:
        return []
    claimed: list[SummaryTarget] = []
    with Session(engine) as session, session.begin():
        for weekday, zones in groups.items():
            for local_day, starts in _days_by_start_hour(now, zones[0]).items():
                rows = session.execute(
                    update(User)
                    .where(User.weekly_summary_enabled, User.is_blocked.is_(False),
                           User.onboarded_at.is_not(None), User.timezone.in_(zones),
                           User.weekly_summary_weekday == weekday,
                           User.day_start_hour.in_(starts),
                           or_(User.weekly_summary_sent_on.is_(None),
                               User.weekly_summary_sent_on < local_day))
                    .values(weekly_summary_sent_on=local_day)
                    .returning(User.id, User.telegram_id, User.language)).all()
                claimed.extend(SummaryTarget(r.id, r.telegram_id, r.language, local_day)
                               for r in rows)
    return claimed


def _days_by_start_hour(now: datetime, zone: str) -> dict[date, list[int]]:
    """{the user's day now: [the day-start hours giving it]}: a user whose day starts after
    the summary hour is still in the day before (zones of one group share the local hour)."""
    out: dict[date, list[int]] = {}
    for start in range(24):
        out.setdefault(progress.local_day(now, zone, start), []).append(start)
    return out


@dataclass(frozen=True)
class WeekLine:
    name: str
    done: int
    due: int
    streak: int
    streak_unit: str


def week_lines(engine: Engine, user_id: int, local_day: date) -> list[WeekLine]:
    """Per habit: successes over the due days of the last 7 days (today included)."""
    start = local_day - timedelta(days=6)
    lines = []
    for item in user_stats(engine, user_id, local_day):
        done, due = _count(item, start, local_day)
        if due == 0 and done == 0:
            continue
        lines.append(WeekLine(item.habit.name, done, due, item.summary.current_streak,
                              item.summary.streak_unit))
    return lines


def _count(item: HabitStats, start: date, end: date) -> tuple[int, int]:
    days = progress.calendar(item.spec, item.checkins, item.rest, end, start, end)
    done = sum(1 for s in days.values() if s.kind == "success")
    due = sum(1 for s in days.values() if s.kind in ("success", "failure", "partial", "pending"))
    if item.habit.frequency == "times_per_week":
        due = item.habit.times_per_week
    return done, due
