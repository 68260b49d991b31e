"""Export of a user's habits and check-ins: CSV for spreadsheets, JSON for re-import.

Our JSON also carries what the statistics are computed from besides the check-ins (when a
habit was created, archived and paused, and the rest periods), so a re-import into a fresh
account gives the same numbers; the CSV is for reading.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from habitbot.models import Habit, HabitCheckin, HabitSchedule, RestPeriod, User

EXPORT_FORMAT = "habitbot-export"
EXPORT_VERSION = 1
CSV_COLUMNS = ("habit", "habit_kind", "target", "unit", "direction", "frequency", "weekdays",
               "times_per_week", "date", "status", "value")
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Spreadsheets run a cell that starts with one of these as a formula.
FORMULA_START = ("=", "+", "-", "@")


@dataclass(frozen=True)
class CheckinRecord:
    day: date
    status: str
    value: Decimal | None


@dataclass(frozen=True)
class HabitRecord:
    name: str
    kind: str
    target_value: Decimal | None
    target_unit: str | None
    target_direction: str
    frequency: str
    weekdays: int
    times_per_week: int
    reminder_times: tuple[time, ...]
    archived: bool
    paused: bool
    created_at: datetime
    archived_at: datetime | None
    paused_at: datetime | None
    checkins: tuple[CheckinRecord, ...]
    rest_periods: tuple[tuple[date, date], ...] = ()


@dataclass(frozen=True)
class ExportData:
    exported_at: datetime
    timezone: str
    habits: tuple[HabitRecord, ...]
    rest_periods: tuple[tuple[date, date], ...] = ()  # those of all habits


def export_user(engine: Engine, user_id: int, now: datetime | None = None) -> ExportData:
    """Every habit of the user, archived ones included, in list order; check-ins by date."""
    now = now or datetime.now(UTC)
    with Session(engine, expire_on_commit=False) as conn, conn.begin():
        zone = conn.execute(select(User.timezone).where(User.id == user_id)).scalar_one()
        habits = conn.execute(select(Habit).where(Habit.user_id == user_id)
                              .order_by(Habit.position, Habit.id)).scalars().all()
        ids = [h.id for h in habits]
        times: dict[int, list[time]] = {hid: [] for hid in ids}
        checkins: dict[int, list[CheckinRecord]] = {hid: [] for hid in ids}
        if ids:
            for habit_id, local_time in conn.execute(
                    select(HabitSchedule.habit_id, HabitSchedule.local_time)
                    .where(HabitSchedule.habit_id.in_(ids)).order_by(HabitSchedule.local_time)):
                times[habit_id].append(local_time)
            for row in conn.execute(
                    select(HabitCheckin.habit_id, HabitCheckin.local_date, HabitCheckin.status,
                           HabitCheckin.value).where(HabitCheckin.habit_id.in_(ids))
                    .order_by(HabitCheckin.local_date)):
                checkins[row.habit_id].append(CheckinRecord(row.local_date, row.status,
                                                            row.value))
        rests: dict[int | None, list[tuple[date, date]]] = {None: [], **{h: [] for h in ids}}
        for rest in conn.execute(select(RestPeriod.habit_id, RestPeriod.starts_on,
                                        RestPeriod.ends_on)
                                 .where(RestPeriod.user_id == user_id)
                                 .order_by(RestPeriod.starts_on, RestPeriod.ends_on)):
            rests[rest.habit_id].append((rest.starts_on, rest.ends_on))
    records = tuple(
        HabitRecord(h.name, h.kind, h.target_value, h.target_unit, h.target_direction,
                    h.frequency, h.weekdays, h.times_per_week, tuple(times[h.id]),
                    h.archived_at is not None, h.archived_at is None and not h.is_active,
                    h.created_at, h.archived_at, h.paused_at, tuple(checkins[h.id]),
                    tuple(rests[h.id]))
        for h in habits)
    return ExportData(now, zone, records, tuple(rests[None]))


def _number(value: Decimal | None) -> str:
    return "" if value is None else format(value.normalize(), "f")


def _weekday_text(mask: int) -> list[str]:
    return [name for bit, name in enumerate(WEEKDAY_NAMES) if mask >> bit & 1]


def _cell(text: str | None) -> str:
    text = text or ""
    return "'" + text if text.startswith(FORMULA_START) else text


def to_csv(data: ExportData) -> bytes:
    """One row per check-in (a habit without any still gets one row), UTF-8 with a BOM."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for habit in data.habits:
        settings = [_cell(habit.name), habit.kind, _number(habit.target_value),
                    _cell(habit.target_unit), habit.target_direction, habit.frequency,
                    ",".join(_weekday_text(habit.weekdays)), habit.times_per_week]
        for checkin in habit.checkins:
            writer.writerow([*settings, checkin.day.isoformat(), checkin.status,
                             _number(checkin.value)])
        if not habit.checkins:
            writer.writerow([*settings, "", "", ""])
    return out.getvalue().encode("utf-8-sig")


def _instant(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _ranges(periods: Iterable[tuple[date, date]]) -> list[dict[str, str]]:
    return [{"starts_on": start.isoformat(), "ends_on": end.isoformat()}
            for start, end in periods]


def to_json(data: ExportData) -> bytes:
    doc = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": data.exported_at.isoformat(),
        "timezone": data.timezone,
        "rest_periods": _ranges(data.rest_periods),
        "habits": [{
            "name": h.name,
            "kind": h.kind,
            "target_value": None if h.target_value is None else _number(h.target_value),
            "target_unit": h.target_unit,
            "target_direction": h.target_direction,
            "frequency": h.frequency,
            "weekdays": _weekday_text(h.weekdays),
            "times_per_week": h.times_per_week,
            "reminder_times": [t.strftime("%H:%M") for t in h.reminder_times],
            "archived": h.archived,
            "paused": h.paused,
            "created_at": _instant(h.created_at),
            "archived_at": _instant(h.archived_at),
            "paused_at": _instant(h.paused_at),
            "rest_periods": _ranges(h.rest_periods),
            "checkins": [{"date": c.day.isoformat(), "status": c.status,
                          "value": None if c.value is None else _number(c.value)}
                         for c in h.checkins],
        } for h in data.habits],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8")


