"""Reading our own exports back: the JSON (everything the statistics need) and the CSV."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time

from habitbot.models.habits import ALL_WEEKDAYS
from habitbot.services.habits import MAX_REMINDERS, HabitDraft
from habitbot.services.transfer.export import (
    CSV_COLUMNS,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    FORMULA_START,
    WEEKDAY_NAMES,
)
from habitbot.services.transfer.incoming import (
    BadValue,
    Incoming,
    ParsedFile,
    Report,
    add_checkin,
    amount,
    parse_day,
    target,
    unit,
)
from habitbot.services.transfer.limits import MAX_CHECKINS, Budget, TransferError

_CLOCK_RE = re.compile(r"^[0-9]{2}:[0-9]{2}$")
_WHOLE_RE = re.compile(r"^-?[0-9]{1,9}$")


def _weekday_mask(raw: object) -> int:
    if raw in (None, "", []):
        return ALL_WEEKDAYS
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    names = raw.split(",", len(WEEKDAY_NAMES)) if isinstance(raw, str) else raw
    if not isinstance(names, list) or len(names) > len(WEEKDAY_NAMES):
        raise BadValue()
    mask = 0
    for name in names:
        if not isinstance(name, str) or name.strip().lower() not in WEEKDAY_NAMES:
            raise BadValue()
        mask |= 1 << WEEKDAY_NAMES.index(name.strip().lower())
    return mask


def _int(raw: object, default: int) -> int:
    if raw in (None, ""):
        return default
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and _WHOLE_RE.match(raw.strip()):
        return int(raw)
    raise BadValue()


def _text(raw: object, default: str) -> str:
    if raw in (None, ""):
        return default
    if not isinstance(raw, str):
        raise BadValue()
    return raw


def _draft(name: object, kind: object, target_raw: object, unit_raw: object,
           direction: object, frequency: object, weekdays: object,
           per_week: object) -> HabitDraft:
    kind_text = _text(kind, "boolean")
    target_value = target(target_raw) if kind_text == "measurable" else None
    if kind_text == "measurable" and target_value is None:
        raise BadValue()
    return HabitDraft(_text(name, ""), kind_text, target_value, unit(unit_raw),
                      _text(direction, "at_least"), _text(frequency, "daily"),
                      _weekday_mask(weekdays), _int(per_week, 7))


def _reminders(raw: object) -> list[time]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_REMINDERS:
        raise BadValue()
    times = []
    for text in raw:
        if not isinstance(text, str) or not _CLOCK_RE.match(text):
            raise BadValue()
        try:
            times.append(datetime.strptime(text, "%H:%M").time())
        except ValueError:
            raise BadValue() from None
    return times


def _moment(raw: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(raw) if isinstance(raw, str) and len(raw) < 64 else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def _json_checkins(habit: Incoming, raw: object, report: Report) -> None:
    if not isinstance(raw, list):
        raise TransferError("bad_json")
    for item in raw:
        if not isinstance(item, dict) or item.get("status") not in ("done", "skipped"):
            report.ignore("bad_values")
            continue
        try:
            value = None if item.get("value") is None else amount(item["value"])
        except BadValue:
            report.ignore("bad_values")
            continue
        add_checkin(habit, item.get("date"), item["status"], value, report)


def _json_ranges(raw: object, report: Report) -> list[tuple[date, date]]:
    items = raw if isinstance(raw, list) else []
    report.budget.add_rest_periods(len(items))
    ranges = []
    for item in items:
        start, end = (parse_day(item.get(k)) if isinstance(item, dict) else None
                      for k in ("starts_on", "ends_on"))
        if start is None or end is None or end < start:
            report.ignore("bad_dates")
        else:
            ranges.append((start, end))
    return ranges


def _json_habits(doc: dict[str, object]) -> list[dict[str, object]]:
    """The habits of the document, refused on its shape before any of them is read."""
    habits = doc.get("habits")
    if not isinstance(habits, list) or not all(isinstance(h, dict) for h in habits):
        raise TransferError("bad_json")
    Budget.check_habits(len(habits))
    checkins = sum(len(h["checkins"]) for h in habits if isinstance(h.get("checkins"), list))
    if checkins > MAX_CHECKINS:
        raise TransferError("too_many_checkins", MAX_CHECKINS)
    return habits


def parse_json(text: str, report: Report) -> ParsedFile:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise TransferError("bad_json") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise TransferError("unknown_format")
    if doc.get("version") != EXPORT_VERSION:
        raise TransferError("unsupported_version")
    habits = []
    for raw in _json_habits(doc):
        try:
            draft = _draft(raw.get("name"), raw.get("kind"), raw.get("target_value"),
                           raw.get("target_unit"), raw.get("target_direction"),
                           raw.get("frequency"), raw.get("weekdays"), raw.get("times_per_week"))
            draft.reminder_times = _reminders(raw.get("reminder_times"))
        except BadValue:
            checkins = raw.get("checkins")
            report.ignore("invalid_habits", len(checkins) if isinstance(checkins, list) else 0)
            continue
        habit = Incoming(draft, raw.get("archived") is True, raw.get("paused") is True,
                         _moment(raw.get("created_at")), _moment(raw.get("archived_at")),
                         _moment(raw.get("paused_at")),
                         rest_periods=_json_ranges(raw.get("rest_periods"), report))
        _json_checkins(habit, raw.get("checkins") or [], report)
        habits.append(habit)
    return ParsedFile(habits, _json_ranges(doc.get("rest_periods"), report))


def _uncell(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_START) else text


def parse_csv(rows: list[list[str]], report: Report) -> list[Incoming]:
    habits: dict[str, Incoming | None] = {}
    for row in rows[1:]:
        row = (row + [""] * len(CSV_COLUMNS))[:len(CSV_COLUMNS)]
        name, kind, target_raw, unit_raw, direction, frequency, weekdays, per_week, day, \
            status, value = row
        name = _uncell(name)
        if name not in habits:
            report.budget.check_habits(len(habits) + 1)
            try:
                habits[name] = Incoming(_draft(name, kind, target_raw, _uncell(unit_raw),
                                               direction, frequency, weekdays, per_week))
            except BadValue:
                habits[name] = None
        habit = habits[name]
        if habit is None:
            report.ignore("invalid_habits", 1 if day else 0)
        elif day or status or value:
            try:
                if status not in ("done", "skipped"):
                    raise BadValue()
                add_checkin(habit, day, status, amount(value) if value else None, report)
            except BadValue:
                report.ignore("bad_values")
    return [h for h in habits.values() if h is not None]
