"""What a parsed file holds before it is written (habits with their check-ins and rest
periods), the report of what could not be used, and the cell parsers the formats share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from habitbot.services.habits import TARGET_MAX, UNIT_MAX, HabitDraft, HabitError, clean_unit
from habitbot.services.habits import parse_amount as _parse_amount
from habitbot.services.transfer.limits import Budget

_MILLI = Decimal("0.001")
_OLDEST_DAY = date(1970, 1, 1)
_DAY_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_MAX_NUMBER_CHARS = 32


@dataclass
class Incoming:
    draft: HabitDraft
    archived: bool = False
    paused: bool = False
    created_at: datetime | None = None
    archived_at: datetime | None = None
    paused_at: datetime | None = None
    checkins: dict[date, tuple[str, Decimal | None]] = field(default_factory=dict)
    rest_periods: list[tuple[date, date]] = field(default_factory=list)


@dataclass
class ParsedFile:
    habits: list[Incoming]
    rest_periods: list[tuple[date, date]] = field(default_factory=list)


@dataclass
class Report:
    budget: Budget = field(default_factory=Budget)
    rows_ignored: int = 0
    warnings: list[str] = field(default_factory=list)

    def warn(self, code: str) -> None:
        if code not in self.warnings:
            self.warnings.append(code)

    def ignore(self, code: str, rows: int = 1) -> None:
        self.rows_ignored += rows
        self.warn(code)
        self.budget.step()


class BadValue(ValueError):
    pass


def parse_day(raw: object) -> date | None:
    if not isinstance(raw, str) or not _DAY_RE.match(raw.strip()):
        return None
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError:
        return None
    return day if day >= _OLDEST_DAY else None


def add_checkin(habit: Incoming, raw_day: object, status: str, value: Decimal | None,
                report: Report) -> None:
    day = parse_day(raw_day)
    if day is None:
        report.ignore("bad_dates")
    elif day in habit.checkins:
        report.ignore("duplicate_dates")
    else:
        report.budget.add_checkins()
        habit.checkins[day] = (status, value)


def amount(raw: object) -> Decimal:
    """A check-in value: a non-negative number with at most three decimals kept."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        raise BadValue()
    text = str(raw).strip().replace(",", ".")
    if len(text) > _MAX_NUMBER_CHARS:  # Decimal's work grows with the digits
        raise BadValue()
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BadValue() from None
    if not value.is_finite() or value < 0 or value > TARGET_MAX:
        raise BadValue()
    return value.quantize(_MILLI, ROUND_HALF_UP)


def target(raw: object) -> Decimal | None:
    try:
        return _parse_amount(str(amount(raw)))
    except (BadValue, HabitError):
        return None


def unit(raw: object) -> str | None:
    return clean_unit(raw.strip()[:UNIT_MAX]) if isinstance(raw, str) else None
