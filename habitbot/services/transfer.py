"""Export of a user's habits and check-ins (CSV for spreadsheets, JSON for re-import) and import
of our JSON or CSV export and of Loop Habit Tracker's CSV export (its ZIP or bare files).

An import is one transaction: either everything in the file that can be used is written, or,
when the file is refused with a `TransferError`, nothing is. Rows that cannot be used (a date
that does not parse, a future date, a value out of range, a habit whose name breaks our rules)
are counted in `rows_ignored` with a warning code; neutral cells (Loop's NO, UNKNOWN, YES_AUTO,
empty) are not rows at all. Habits are matched to the user's existing ones by name
(case-insensitive) and existing check-ins are never overwritten, so importing the same file
twice changes nothing the second time.

Our JSON also carries what the statistics are computed from besides the check-ins (when a
habit was created, archived and paused, and the rest periods), so a re-import into a fresh
account gives the same numbers; the CSV is for reading.

Loop stores the values of numerical habits in thousandths and exports them that way ("2500"
is 2.5); a value written with a decimal point is taken as it is.

Refusal codes: too_large, zip_bomb, bad_zip, unknown_archive, not_csv_or_zip, bad_encoding,
bad_csv, bad_json, unknown_format, unsupported_version, unknown_columns, send_loop_zip (a file
that does not name its habits, or Loop's Scores.csv), empty, too_many_habits, too_many_rows.
Warning codes: bad_dates, future_dates, bad_values, duplicate_dates, invalid_names,
invalid_habits, duplicate_names_merged, frequency_changed_to_daily, target_adjusted,
checkmarks_unmatched, archived_over_free_limit, reminders_trimmed.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from habitbot.models import Habit, HabitCheckin, HabitSchedule, RestPeriod, User
from habitbot.models.habits import ALL_WEEKDAYS
from habitbot.services import schedules
from habitbot.services.habits import (
    TARGET_MAX,
    UNIT_MAX,
    HabitDraft,
    HabitError,
    check_limits,
    clean_unit,
    parse_amount,
    validate,
)

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_UNZIPPED_BYTES = 20 * 1024 * 1024
MAX_ZIP_ENTRIES = 200
MAX_HABITS = 200
MAX_CHECKINS = 100_000
EXPORT_FORMAT = "habitbot-export"
EXPORT_VERSION = 1
CSV_COLUMNS = ("habit", "habit_kind", "target", "unit", "direction", "frequency", "weekdays",
               "times_per_week", "date", "status", "value")
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_INSERT_CHUNK = 1000
_MILLI = Decimal("0.001")
_OLDEST_DAY = date(1970, 1, 1)
_DAY_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_CLOCK_RE = re.compile(r"^[0-9]{2}:[0-9]{2}$")
_WHOLE_RE = re.compile(r"^-?[0-9]{1,9}$")
_BINARY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# Spreadsheets run a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@")
_LOOP_EMPTY = {"", "NO", "UNKNOWN", "YES_AUTO"}
_LOOP_CODES = {"2": "done", "3": "skipped", "1": None, "0": None, "-1": None}
_LOOP_HABIT_FOLDER = re.compile(r"^(\d+)(?: [^/]*)?/Checkmarks\.csv$")


class TransferError(ValueError):
    """The file is refused as a whole and nothing was written; `code` selects the message."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


# -- export --------------------------------------------------------------------------------
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
    return "'" + text if text.startswith(_FORMULA_START) else text


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


# -- import: common ------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportSummary:
    habits_created: int
    habits_matched: int
    checkins_imported: int
    checkins_skipped_existing: int
    rows_ignored: int
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Incoming:
    draft: HabitDraft
    archived: bool = False
    paused: bool = False
    created_at: datetime | None = None
    archived_at: datetime | None = None
    paused_at: datetime | None = None
    checkins: dict[date, tuple[str, Decimal | None]] = field(default_factory=dict)
    rest_periods: list[tuple[date, date]] = field(default_factory=list)


@dataclass
class _File:
    habits: list[_Incoming]
    rest_periods: list[tuple[date, date]] = field(default_factory=list)


@dataclass
class _Report:
    rows_ignored: int = 0
    warnings: list[str] = field(default_factory=list)

    def warn(self, code: str) -> None:
        if code not in self.warnings:
            self.warnings.append(code)

    def ignore(self, code: str, rows: int = 1) -> None:
        self.rows_ignored += rows
        self.warn(code)


class _BadValue(ValueError):
    pass


def _parse_day(raw: object) -> date | None:
    if not isinstance(raw, str) or not _DAY_RE.match(raw.strip()):
        return None
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError:
        return None
    return day if day >= _OLDEST_DAY else None


def _add_checkin(habit: _Incoming, raw_day: object, status: str, value: Decimal | None,
                 report: _Report) -> None:
    day = _parse_day(raw_day)
    if day is None:
        report.ignore("bad_dates")
    elif day in habit.checkins:
        report.ignore("duplicate_dates")
    else:
        habit.checkins[day] = (status, value)


def _amount(raw: object) -> Decimal:
    """A check-in value: a non-negative number with at most three decimals kept."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        raise _BadValue()
    try:
        value = Decimal(str(raw).strip().replace(",", "."))
    except InvalidOperation:
        raise _BadValue() from None
    if not value.is_finite() or value < 0 or value > TARGET_MAX:
        raise _BadValue()
    return value.quantize(_MILLI, ROUND_HALF_UP)


def _target(raw: object) -> Decimal | None:
    try:
        return parse_amount(str(_amount(raw)))
    except (_BadValue, HabitError):
        return None


def _unit(raw: object) -> str | None:
    return clean_unit(raw.strip()[:UNIT_MAX]) if isinstance(raw, str) else None


def _rows(text: str) -> list[list[str]]:
    try:
        return [row for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]
    except csv.Error:
        raise TransferError("bad_csv") from None


def _decode(raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise TransferError("bad_encoding")
    if _BINARY.search(raw[:65536].decode("latin-1")):
        raise TransferError("not_csv_or_zip")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TransferError("bad_encoding") from None
    if _BINARY.search(text):
        raise TransferError("not_csv_or_zip")
    return text


# -- import: our JSON and CSV --------------------------------------------------------------
def _weekday_mask(raw: object) -> int:
    if raw in (None, "", []):
        return ALL_WEEKDAYS
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    names = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(names, list):
        raise _BadValue()
    mask = 0
    for name in names:
        if not isinstance(name, str) or name.strip().lower() not in WEEKDAY_NAMES:
            raise _BadValue()
        mask |= 1 << WEEKDAY_NAMES.index(name.strip().lower())
    return mask


def _int(raw: object, default: int) -> int:
    if raw in (None, ""):
        return default
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and _WHOLE_RE.match(raw.strip()):
        return int(raw)
    raise _BadValue()


def _text(raw: object, default: str) -> str:
    if raw in (None, ""):
        return default
    if not isinstance(raw, str):
        raise _BadValue()
    return raw


def _our_draft(name: object, kind: object, target: object, unit: object, direction: object,
               frequency: object, weekdays: object, per_week: object) -> HabitDraft:
    kind_text = _text(kind, "boolean")
    target_value = _target(target) if kind_text == "measurable" else None
    if kind_text == "measurable" and target_value is None:
        raise _BadValue()
    return HabitDraft(_text(name, ""), kind_text, target_value, _unit(unit),
                      _text(direction, "at_least"), _text(frequency, "daily"),
                      _weekday_mask(weekdays), _int(per_week, 7))


def _reminders(raw: object) -> list[time]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _BadValue()
    times = []
    for text in raw:
        if not isinstance(text, str) or not _CLOCK_RE.match(text):
            raise _BadValue()
        try:
            times.append(datetime.strptime(text, "%H:%M").time())
        except ValueError:
            raise _BadValue() from None
    return times


def _moment(raw: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def _json_checkins(habit: _Incoming, raw: object, report: _Report) -> None:
    if not isinstance(raw, list):
        raise TransferError("bad_json")
    for item in raw:
        if not isinstance(item, dict) or item.get("status") not in ("done", "skipped"):
            report.ignore("bad_values")
            continue
        try:
            value = None if item.get("value") is None else _amount(item["value"])
        except _BadValue:
            report.ignore("bad_values")
            continue
        _add_checkin(habit, item.get("date"), item["status"], value, report)


def _json_ranges(raw: object, report: _Report) -> list[tuple[date, date]]:
    ranges = []
    for item in raw if isinstance(raw, list) else []:
        start, end = (_parse_day(item.get(k)) if isinstance(item, dict) else None
                      for k in ("starts_on", "ends_on"))
        if start is None or end is None or end < start:
            report.ignore("bad_dates")
        else:
            ranges.append((start, end))
    return ranges


def _parse_json(text: str, report: _Report) -> _File:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise TransferError("bad_json") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise TransferError("unknown_format")
    if doc.get("version") != EXPORT_VERSION:
        raise TransferError("unsupported_version")
    if not isinstance(doc.get("habits"), list):
        raise TransferError("bad_json")
    habits = []
    for raw in doc["habits"]:
        if not isinstance(raw, dict):
            raise TransferError("bad_json")
        try:
            draft = _our_draft(raw.get("name"), raw.get("kind"), raw.get("target_value"),
                               raw.get("target_unit"), raw.get("target_direction"),
                               raw.get("frequency"), raw.get("weekdays"),
                               raw.get("times_per_week"))
            draft.reminder_times = _reminders(raw.get("reminder_times"))
        except _BadValue:
            checkins = raw.get("checkins")
            report.ignore("invalid_habits", len(checkins) if isinstance(checkins, list) else 0)
            continue
        habit = _Incoming(draft, raw.get("archived") is True, raw.get("paused") is True,
                          _moment(raw.get("created_at")), _moment(raw.get("archived_at")),
                          _moment(raw.get("paused_at")),
                          rest_periods=_json_ranges(raw.get("rest_periods"), report))
        _json_checkins(habit, raw.get("checkins") or [], report)
        habits.append(habit)
    return _File(habits, _json_ranges(doc.get("rest_periods"), report))


def _uncell(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:].startswith(_FORMULA_START) else text


def _parse_our_csv(rows: list[list[str]], report: _Report) -> list[_Incoming]:
    habits: dict[str, _Incoming | None] = {}
    for row in rows[1:]:
        row = (row + [""] * len(CSV_COLUMNS))[:len(CSV_COLUMNS)]
        name, kind, target, unit, direction, frequency, weekdays, per_week, day, status, \
            value = row
        name = _uncell(name)
        if name not in habits:
            try:
                habits[name] = _Incoming(_our_draft(name, kind, target, _uncell(unit),
                                                    direction, frequency, weekdays, per_week))
            except _BadValue:
                habits[name] = None
        habit = habits[name]
        if habit is None:
            report.ignore("invalid_habits", 1 if day else 0)
        elif day or status or value:
            try:
                if status not in ("done", "skipped"):
                    raise _BadValue()
                _add_checkin(habit, day, status, _amount(value) if value else None, report)
            except _BadValue:
                report.ignore("bad_values")
    return [h for h in habits.values() if h is not None]


# -- import: Loop Habit Tracker ------------------------------------------------------------
@dataclass
class _LoopHabit:
    position: int
    name: str
    numerical: bool
    habit: _Incoming


def _loop_value(raw: str, numerical: bool) -> tuple[str, Decimal | None] | None:
    token = raw.strip().upper()
    if token in _LOOP_EMPTY:
        return None
    if token == "YES_MANUAL":
        return ("done", None)
    if token == "SKIP":
        return ("skipped", None)
    if not numerical:
        if token not in _LOOP_CODES:
            raise _BadValue()
        status = _LOOP_CODES[token]
        return None if status is None else (status, None)
    if re.fullmatch(r"-?[0-9]+", token):
        thousandths = Decimal(token)
        return ("done", _amount(thousandths / 1000)) if thousandths > 0 else None
    value = _amount(token)
    return ("done", value) if value > 0 else None


def _loop_frequency(numerator: str, denominator: str, draft: HabitDraft,
                    report: _Report) -> None:
    try:
        num, den = int(numerator or 1), int(denominator or 1)
    except ValueError:
        num, den = 0, 0
    if num >= 1 and (num == den or (den == 7 and num >= 7)):
        return
    if den == 7 and 1 <= num < 7:
        draft.frequency, draft.times_per_week = "times_per_week", num
        return
    report.warn("frequency_changed_to_daily")


def _loop_habits(rows: list[list[str]], report: _Report) -> list[_LoopHabit]:
    header = [c.strip() for c in rows[0]]
    old = "NumRepetitions" in header
    for column in ("Position", "Name"):
        if column not in header:
            raise TransferError("unknown_columns")
    out = []
    for index, row in enumerate(rows[1:], start=1):
        cells = dict(zip(header, row, strict=False))
        numerical = cells.get("Type", "").strip().upper() == "NUMERICAL"
        draft = HabitDraft(cells.get("Name", ""))
        if numerical:
            draft.kind, draft.target_unit = "measurable", _unit(cells.get("Unit"))
            draft.target_value = _target(cells.get("Target Value", ""))
            if draft.target_value is None:
                draft.target_value = Decimal(1)
                report.warn("target_adjusted")
            if cells.get("Target Type", "").strip().upper() == "AT_MOST":
                draft.target_direction = "at_most"
        _loop_frequency(cells.get("NumRepetitions" if old else "FrequencyNumerator", ""),
                        cells.get("Interval" if old else "FrequencyDenominator", ""),
                        draft, report)
        archived = cells.get("Archived?", "").strip().lower() == "true"
        try:
            position = _int(cells.get("Position", "").strip(), index)
        except _BadValue:
            position = index
        out.append(_LoopHabit(position, draft.name, numerical, _Incoming(draft, archived)))
    return out


def _loop_cells(loop: _LoopHabit, cells: Iterable[tuple[str, str]], report: _Report) -> None:
    for raw_day, raw_value in cells:
        try:
            checkin = _loop_value(raw_value, loop.numerical)
        except _BadValue:
            report.ignore("bad_values")
            continue
        if checkin is not None:
            _add_checkin(loop.habit, raw_day, checkin[0], checkin[1], report)


def _habit_file_cells(rows: list[list[str]]) -> Iterator[tuple[str, str]]:
    for row in rows:
        if len(row) >= 2 and row[0].strip() != "Date":
            yield row[0], row[1]


def _looks_numerical(values: Iterable[str]) -> bool:
    return any(re.fullmatch(r"-?[0-9]+(?:\.[0-9]+)?", v.strip()) and v.strip() not in _LOOP_CODES
               for v in values)


def _is_single_habit_file(rows: list[list[str]]) -> bool:
    """A per-habit Checkmarks.csv (`Date,Value,Notes`, or headerless `date,value` in old
    versions): it does not name its habit."""
    header = [c.strip() for c in rows[0]]
    return header[:2] == ["Date", "Value"] or (_parse_day(header[0]) is not None
                                                and len(header) <= 3)


def _loop_matrix(rows: list[list[str]], habits: list[_LoopHabit] | None,
                 report: _Report) -> list[_LoopHabit]:
    """Loop's top-level Checkmarks.csv: `Date,<habit>,…,` and one row per day, newest first.
    Without Habits.csv the habits come from the header; their names are not quoted there, so
    columns are matched by name and, when a comma in a name broke the header, by order."""
    names = rows[0][1:]
    while names and not names[-1].strip():
        names.pop()
    width = max((len(r) for r in rows[1:]), default=1) - 1
    while width > 0 and all(len(r) <= width or not r[width].strip() for r in rows[1:]):
        width -= 1
    if habits is None:
        if len(names) != width:
            raise TransferError("send_loop_zip")
        columns = [[r[i + 1] if i + 1 < len(r) else "" for r in rows[1:]] for i in range(width)]
        habits = [_LoopHabit(i + 1, name, _looks_numerical(columns[i]),
                             _Incoming(HabitDraft(name)))
                  for i, name in enumerate(names)]
        for loop in habits:
            if loop.numerical:
                loop.habit.draft.kind, loop.habit.draft.target_value = "measurable", Decimal(1)
                report.warn("target_adjusted")
    by_name = {h.name: h for h in habits}
    if len(names) == width and all(n in by_name for n in names):
        targets = [by_name[n] for n in names]
    elif width == len(habits):
        targets = sorted(habits, key=lambda h: h.position)
    else:
        report.warn("checkmarks_unmatched")
        return habits
    for i, loop in enumerate(targets):
        _loop_cells(loop, ((r[0], r[i + 1]) for r in rows[1:] if len(r) > i + 1), report)
    return habits


def _parse_loop(files: dict[str, list[list[str]]], report: _Report) -> list[_Incoming]:
    """`files` maps paths relative to the export's root to CSV rows."""
    checkmarks = files.get("Checkmarks.csv")
    if "Habits.csv" not in files:
        if not checkmarks:
            raise TransferError("unknown_archive")
        if _is_single_habit_file(checkmarks):
            raise TransferError("send_loop_zip")
        return [h.habit for h in _loop_matrix(checkmarks, None, report)]
    habits = _loop_habits(files["Habits.csv"], report)
    by_position = {h.position: h for h in habits}
    folders = {int(m.group(1)): rows for path, rows in files.items()
               if (m := _LOOP_HABIT_FOLDER.match(path))}
    if folders:
        for position, rows in folders.items():
            if position in by_position:
                _loop_cells(by_position[position], _habit_file_cells(rows), report)
    elif checkmarks:
        _loop_matrix(checkmarks, habits, report)
    return [h.habit for h in habits]


def _unzip(data: bytes) -> dict[str, list[list[str]]]:
    """Habits.csv and the Checkmarks.csv files of a Loop ZIP, paths relative to Habits.csv."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError):
        raise TransferError("bad_zip") from None
    if len(infos) > MAX_ZIP_ENTRIES or sum(i.file_size for i in infos) > MAX_UNZIPPED_BYTES:
        raise TransferError("zip_bomb")
    wanted = [i for i in infos if not i.is_dir()
              and i.filename.rsplit("/", 1)[-1] in ("Habits.csv", "Checkmarks.csv")]
    roots = sorted((i.filename.rsplit("/", 1)[-1] != "Habits.csv", i.filename.count("/"),
                    i.filename.rpartition("/")[0]) for i in wanted)
    root = roots[0][2] + "/" if roots and roots[0][2] else ""
    budget = MAX_UNZIPPED_BYTES
    files = {}
    for info in wanted:
        if not info.filename.startswith(root):
            continue
        try:
            with archive.open(info) as member:
                content = member.read(budget + 1)
        except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError,
                ValueError):
            raise TransferError("bad_zip") from None
        budget -= len(content)
        if budget < 0:
            raise TransferError("zip_bomb")
        files[info.filename[len(root):]] = _rows(_decode(content))
    if not files:
        raise TransferError("unknown_archive")
    return files


def _parse_csv(filename: str, text: str, report: _Report) -> list[_Incoming]:
    rows = _rows(text)
    if not rows:
        raise TransferError("empty")
    header = [c.strip() for c in rows[0]]
    if tuple(header) == CSV_COLUMNS:
        return _parse_our_csv(rows, report)
    if header[:2] == ["Position", "Name"]:
        return _parse_loop({"Habits.csv": rows}, report)
    if header[:1] == ["Date"] and filename.rsplit("/", 1)[-1].lower().startswith("scores"):
        raise TransferError("send_loop_zip")
    if _is_single_habit_file(rows) or header[:1] == ["Date"]:
        return _parse_loop({"Checkmarks.csv": rows}, report)
    raise TransferError("unknown_columns")


def _parse(filename: str, data: bytes, report: _Report) -> _File:
    if not data.strip():
        raise TransferError("empty")
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _File(_parse_loop(_unzip(data), report))
    text = _decode(data)
    if text.lstrip().startswith(("{", "[")):
        return _parse_json(text, report)
    return _File(_parse_csv(filename, text, report))


# -- import: writing -----------------------------------------------------------------------
def _screen(habits: list[_Incoming], today: date, report: _Report) -> list[_Incoming]:
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
    if len(kept) > MAX_HABITS:
        raise TransferError("too_many_habits")
    if sum(len(h.checkins) for h in kept) > MAX_CHECKINS:
        raise TransferError("too_many_rows")
    return kept


def _start_of(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(zone)).astimezone(UTC)


@dataclass
class _Target:
    id: int
    kind: str
    target_value: Decimal | None
    created_at: datetime


def _create(conn: Session, user_id: int, habit: _Incoming, position: int, zone: str,
            now: datetime, report: _Report) -> _Target:
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
    created_at = habit.created_at or (_start_of(min(habit.checkins), zone) if habit.checkins
                                      else now)
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


def _backdate(conn: Session, target: _Target, first_day: date, zone: str) -> None:
    """An existing habit that receives older history starts on its first imported day."""
    if first_day < target.created_at.astimezone(ZoneInfo(zone)).date():
        target.created_at = _start_of(first_day, zone)
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


def _write(conn: Session, user_id: int, zone: str, habits: list[_Incoming],
           rests: list[tuple[date, date]], now: datetime, report: _Report) -> ImportSummary:
    existing: dict[str, _Target] = {}
    for h in conn.execute(select(Habit).where(Habit.user_id == user_id)
                          .order_by(Habit.position, Habit.id)).scalars():
        existing.setdefault(h.name.casefold(),
                            _Target(h.id, h.kind, h.target_value, h.created_at))
    before = set(existing)
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
            existing[key] = _create(conn, user_id, habit, position, zone, now, report)
        elif key in before:
            matched.add(key)
            if habit.checkins:
                _backdate(conn, existing[key], min(habit.checkins), zone)
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
    _insert_rests(conn, user_id, periods)
    return ImportSummary(created, len(matched), imported, len(rows) - imported + repeated,
                         report.rows_ignored, list(report.warnings))


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
                now: datetime | None = None) -> ImportSummary:
    """Import a file the user sent: our JSON or CSV export, or Loop Habit Tracker's CSV export
    (the ZIP, or its Habits.csv / Checkmarks.csv alone). Raises `TransferError` and writes
    nothing when the file is refused."""
    if len(data) > MAX_FILE_BYTES:
        raise TransferError("too_large")
    now = now or datetime.now(UTC)
    report = _Report()
    parsed = _parse(filename, data, report)
    with Session(engine, expire_on_commit=False) as conn, conn.begin():
        # Serialise with habit creation so the free limit holds across both.
        user = conn.execute(select(User.timezone, User.day_start_hour)
                            .where(User.id == user_id).with_for_update(key_share=True)).one()
        local_now = now.astimezone(ZoneInfo(user.timezone))
        today = (local_now - timedelta(hours=user.day_start_hour)).date()
        habits = _screen(parsed.habits, today, report)
        return _write(conn, user_id, user.timezone, habits, parsed.rest_periods, now, report)
