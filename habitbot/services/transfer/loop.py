"""Reading Loop Habit Tracker's CSV export: its ZIP, or its Habits.csv / Checkmarks.csv alone.

Loop stores the values of numerical habits in thousandths and exports them that way ("2500"
is 2.5); a value written with a decimal point is taken as it is. Every pass over the cells is
a single one: the work is linear in the cells the file really has.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from habitbot.services.habits import HabitDraft
from habitbot.services.transfer.incoming import (
    BadValue,
    Incoming,
    Report,
    add_checkin,
    amount,
    parse_day,
    target,
    unit,
)
from habitbot.services.transfer.limits import Budget, TransferError, read_rows

HABITS = "Habits.csv"
CHECKMARKS = "Checkmarks.csv"
_EMPTY = {"", "NO", "UNKNOWN", "YES_AUTO"}
_CODES = {"2": "done", "3": "skipped", "1": None, "0": None, "-1": None}
_HABIT_FOLDER = re.compile(r"^(\d{1,9})(?: [^/]*)?/Checkmarks\.csv$")
_NUMBER = re.compile(r"-?[0-9]{1,24}(?:\.[0-9]{1,24})?")
_WHOLE = re.compile(r"-?[0-9]{1,24}")
_POSITION = re.compile(r"[0-9]{1,9}")


@dataclass
class LoopHabit:
    position: int
    name: str
    numerical: bool
    habit: Incoming


class Files:
    """The CSV texts of one upload by path relative to the export's root, each read into rows
    (within the budget) when asked for, and then forgotten: one file's rows are in memory at
    a time."""

    def __init__(self, texts: dict[str, str], budget: Budget,
                 rows: dict[str, list[list[str]]] | None = None):
        self._texts = texts
        self._budget = budget
        self._rows = dict(rows or {})

    def __contains__(self, path: str) -> bool:
        return path in self._texts or path in self._rows

    def paths(self) -> list[str]:
        return sorted({*self._texts, *self._rows})

    def rows(self, path: str) -> list[list[str]]:
        """The rows of `path`, once."""
        if path in self._rows:
            return self._rows.pop(path)
        return read_rows(self._texts.pop(path), self._budget)


def choose_members(names: list[str]) -> dict[str, str]:
    """The members of a Loop ZIP worth inflating, by their path relative to Habits.csv: the
    habits, and the per-habit check-ins when there are any (else the top-level matrix)."""
    wanted = [n for n in names if n.rsplit("/", 1)[-1] in (HABITS, CHECKMARKS)]
    roots = sorted((n.rsplit("/", 1)[-1] != HABITS, n.count("/"), n.rpartition("/")[0])
                   for n in wanted)
    root = roots[0][2] + "/" if roots and roots[0][2] else ""
    chosen = {n: n[len(root):] for n in wanted if n.startswith(root)}
    if any(_HABIT_FOLDER.match(path) for path in chosen.values()):
        chosen = {n: path for n, path in chosen.items() if path != CHECKMARKS}
    return chosen


def _value(raw: str, numerical: bool) -> tuple[str, Decimal | None] | None:
    token = raw.strip().upper()
    if token in _EMPTY:
        return None
    if token == "YES_MANUAL":
        return ("done", None)
    if token == "SKIP":
        return ("skipped", None)
    if not numerical:
        if token not in _CODES:
            raise BadValue()
        status = _CODES[token]
        return None if status is None else (status, None)
    if _WHOLE.fullmatch(token):
        thousandths = Decimal(token)
        return ("done", amount(thousandths / 1000)) if thousandths > 0 else None
    value = amount(token)
    return ("done", value) if value > 0 else None


def _frequency(numerator: str, denominator: str, draft: HabitDraft, report: Report) -> None:
    try:
        num, den = int(numerator[:9] or 1), int(denominator[:9] or 1)
    except ValueError:
        num, den = 0, 0
    if num >= 1 and (num == den or (den == 7 and num >= 7)):
        return
    if den == 7 and 1 <= num < 7:
        draft.frequency, draft.times_per_week = "times_per_week", num
        return
    report.warn("frequency_changed_to_daily")


def _habits(rows: list[list[str]], report: Report) -> list[LoopHabit]:
    header = [c.strip() for c in rows[0]]
    old = "NumRepetitions" in header
    for column in ("Position", "Name"):
        if column not in header:
            raise TransferError("unknown_columns")
    Budget.check_habits(len(rows) - 1)
    out = []
    for index, row in enumerate(rows[1:], start=1):
        cells = dict(zip(header, row, strict=False))
        numerical = cells.get("Type", "").strip().upper() == "NUMERICAL"
        draft = HabitDraft(cells.get("Name", ""))
        if numerical:
            draft.kind, draft.target_unit = "measurable", unit(cells.get("Unit"))
            draft.target_value = target(cells.get("Target Value", ""))
            if draft.target_value is None:
                draft.target_value = Decimal(1)
                report.warn("target_adjusted")
            if cells.get("Target Type", "").strip().upper() == "AT_MOST":
                draft.target_direction = "at_most"
        _frequency(cells.get("NumRepetitions" if old else "FrequencyNumerator", ""),
                   cells.get("Interval" if old else "FrequencyDenominator", ""), draft, report)
        archived = cells.get("Archived?", "").strip().lower() == "true"
        position_text = cells.get("Position", "").strip()
        position = int(position_text) if _POSITION.fullmatch(position_text) else index
        out.append(LoopHabit(position, draft.name, numerical, Incoming(draft, archived)))
    return out


def _cell(loop: LoopHabit, raw_day: str, raw_value: str, report: Report) -> None:
    try:
        checkin = _value(raw_value, loop.numerical)
    except BadValue:
        report.ignore("bad_values")
        return
    if checkin is not None:
        add_checkin(loop.habit, raw_day, checkin[0], checkin[1], report)


def _habit_file_cells(rows: list[list[str]]) -> Iterator[tuple[str, str]]:
    for row in rows:
        if len(row) >= 2 and row[0].strip() != "Date":
            yield row[0], row[1]


def is_single_habit_file(rows: list[list[str]]) -> bool:
    """A per-habit Checkmarks.csv (`Date,Value,Notes`, or headerless `date,value` in old
    versions): it does not name its habit."""
    header = [c.strip() for c in rows[0]]
    return header[:2] == ["Date", "Value"] or (parse_day(header[0]) is not None
                                                and len(header) <= 3)


def _width(rows: Iterable[list[str]], budget: Budget) -> int:
    """The number of habit columns: up to the last one with a value in any row."""
    width = 0
    for row in rows:
        budget.step(len(row))
        for i in range(len(row) - 1, width, -1):
            if row[i].strip():
                width = i
                break
    return width


def _numerical_columns(rows: Iterable[list[str]], width: int, budget: Budget) -> list[bool]:
    numerical = [False] * width
    for row in rows:
        budget.step(len(row))
        for i, cell in enumerate(row[1:width + 1]):
            token = cell.strip()
            if not numerical[i] and token not in _CODES and _NUMBER.fullmatch(token):
                numerical[i] = True
    return numerical


def _header_habits(names: list[str], numerical: list[bool], report: Report) -> list[LoopHabit]:
    habits = []
    for i, name in enumerate(names):
        draft = HabitDraft(name)
        if numerical[i]:
            draft.kind, draft.target_value = "measurable", Decimal(1)
            report.warn("target_adjusted")
        habits.append(LoopHabit(i + 1, name, numerical[i], Incoming(draft)))
    return habits


def _matrix(rows: list[list[str]], habits: list[LoopHabit] | None,
            report: Report) -> list[LoopHabit]:
    """Loop's top-level Checkmarks.csv: `Date,<habit>,…,` and one row per day, newest first.
    Without Habits.csv the habits come from the header; their names are not quoted there, so
    columns are matched by name and, when a comma in a name broke the header, by order."""
    names = rows[0][1:]
    while names and not names[-1].strip():
        names.pop()
    days = rows[1:]
    width = _width(days, report.budget)
    if habits is None:
        if len(names) != width:
            raise TransferError("send_loop_zip")
        Budget.check_habits(width)
        habits = _header_habits(names, _numerical_columns(days, width, report.budget), report)
    by_name = {h.name: h for h in habits}
    if len(names) == width and all(n in by_name for n in names):
        targets = [by_name[n] for n in names]
    elif width == len(habits):
        targets = sorted(habits, key=lambda h: h.position)
    else:
        report.warn("checkmarks_unmatched")
        return habits
    for row in days:
        report.budget.step(len(row))
        for loop, raw_value in zip(targets, row[1:], strict=False):
            _cell(loop, row[0], raw_value, report)
    return habits


def parse(files: Files, report: Report) -> list[Incoming]:
    if HABITS not in files:
        checkmarks = files.rows(CHECKMARKS) if CHECKMARKS in files else []
        if not checkmarks:
            raise TransferError("unknown_archive")
        if is_single_habit_file(checkmarks):
            raise TransferError("send_loop_zip")
        return [h.habit for h in _matrix(checkmarks, None, report)]
    habit_rows = files.rows(HABITS)
    if not habit_rows:
        raise TransferError("empty")
    habits = _habits(habit_rows, report)
    by_position = {h.position: h for h in habits}
    folders = {int(m.group(1)): path for path in files.paths()
               if (m := _HABIT_FOLDER.match(path))}
    if folders:
        for position, path in folders.items():
            if position in by_position:
                loop = by_position[position]
                for raw_day, raw_value in _habit_file_cells(files.rows(path)):
                    _cell(loop, raw_day, raw_value, report)
    elif CHECKMARKS in files and (checkmarks := files.rows(CHECKMARKS)):
        _matrix(checkmarks, habits, report)
    return [h.habit for h in habits]
