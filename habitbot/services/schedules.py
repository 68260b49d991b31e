"""Reminder schedules: an IANA zone, a wall-clock time and weekdays, turned into UTC instants.

A schedule says "08:30 on Mon, Wed, Fri in Europe/Berlin". Each fire instant is computed from
the zone's rules for that calendar day, never from an offset observed "now", so a DST
transition never moves the wall-clock time: 08:30 stays 08:30 and the UTC instant shifts.

Days on which the wall-clock time is not simple, with zoneinfo's ``fold=0`` reading of it:

* Spring-forward gap (02:30 on 2026-03-29 in Europe/Berlin does not exist): the reminder fires
  once, at the instant that wall time names under the offset in force before the transition,
  i.e. one gap-length later on the new clock (02:30 → 03:30 CEST). Never skipped, never twice.
* Fall-back overlap (01:30 occurs twice on 2026-11-01 in America/New_York): the reminder fires
  once, at the first occurrence.
* A skipped calendar day (Pacific/Apia jumped from 2011-12-29 to 2011-12-31): the skipped day's
  reminder lands on the same wall-clock time of the next day. If that day has a reminder too,
  both are the same instant and it fires once.

The next day is computed afresh, so the plain wall-clock time applies again.

Weekday masks: bit 0 = Monday … bit 6 = Sunday, 1..127 (the schema's check constraint).
"""

from __future__ import annotations

import re
import unicodedata
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta

EVERY_DAY = 0b1111111
WORKDAYS = 0b0011111
WEEKEND = 0b1100000

MAX_TIME_TEXT = 32
MAX_WEEKDAYS_TEXT = 100

_ONE_DAY = timedelta(days=1)


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone: {name!r}") from None


def _check_mask(weekdays: int) -> None:
    if not 1 <= weekdays <= EVERY_DAY:
        raise ValueError(f"weekday mask must be between 1 and {EVERY_DAY}, got {weekdays}")


def _check_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _wall_time(local_time: time) -> time:
    if local_time.tzinfo is not None:
        raise ValueError("local_time must be a naive wall-clock time")
    return local_time.replace(fold=0)


def _instants(tz: zoneinfo.ZoneInfo, local_time: time, weekdays: int,
              first_day: date) -> Iterator[datetime]:
    """UTC fire instants of successive matching days from `first_day`, in non-decreasing order
    (two days give the same instant only when a whole day was skipped)."""
    day = first_day
    while True:
        if weekdays >> day.weekday() & 1:
            yield datetime.combine(day, local_time, tzinfo=tz).astimezone(UTC)
        day += _ONE_DAY


def _first_day(moment: datetime, tz: zoneinfo.ZoneInfo) -> date:
    # The day before too: when a whole day is skipped, its fire lands on the next local date.
    return moment.astimezone(tz).date() - _ONE_DAY


def next_fire(zone: str, local_time: time, weekdays: int, after: datetime) -> datetime:
    """The first fire instant strictly after `after` (aware, any zone), as an aware UTC datetime.

    Looks at no more than nine calendar days and converts only those in the mask.
    """
    tz = _zone(zone)
    _check_mask(weekdays)
    _check_aware(after, "after")
    wall = _wall_time(local_time)
    after_utc = after.astimezone(UTC)
    return next(i for i in _instants(tz, wall, weekdays, _first_day(after, tz)) if i > after_utc)


def fire_times(zone: str, local_time: time, weekdays: int, start: datetime,
               end: datetime) -> list[datetime]:
    """Every fire instant in (start, end], in order, each once, as aware UTC datetimes."""
    tz = _zone(zone)
    _check_mask(weekdays)
    _check_aware(start, "start")
    _check_aware(end, "end")
    wall = _wall_time(local_time)
    start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
    fires: list[datetime] = []
    for instant in _instants(tz, wall, weekdays, _first_day(start, tz)):
        if instant > end_utc:
            break
        if instant > start_utc and (not fires or instant != fires[-1]):
            fires.append(instant)
    return fires


def local_fire_date(fire_at: datetime, zone: str) -> date:
    """The date the wall clock in `zone` shows at the fire instant."""
    _check_aware(fire_at, "fire_at")
    return fire_at.astimezone(_zone(zone)).date()


def weekday_list(mask: int) -> list[int]:
    """The weekdays of a mask, 0 = Monday … 6 = Sunday, in order."""
    _check_mask(mask)
    return [day for day in range(7) if mask >> day & 1]


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")
    return " ".join(text.split())


# --- Times of day -------------------------------------------------------------------------

_TIME_WORDS = {"noon": time(12), "полдень": time(12), "midnight": time(0), "полночь": time(0)}
_MERIDIEM_RE = re.compile(r"^(.*?)\s*(a\.?m\.?|p\.?m\.?|утра|дня|вечера|ночи)$")
_HOUR_RE = re.compile(r"^([0-9]{1,2})(?:\s*[hч])?$")
_HOUR_MINUTE_RE = re.compile(r"^([0-9]{1,2})\s*[:.hч]\s*([0-9]{1,2})(?:\s*(?:m|min|мин))?$")
_COMPACT_RE = re.compile(r"^([0-9]{1,2})([0-9]{2})$")

# Russian day parts, each with the clock hours people actually say with it, as 24-hour hours.
_RU_DAY_PARTS = {
    "утра": {h: h for h in range(1, 12)},
    "дня": {12: 12, **{h: h + 12 for h in range(1, 6)}},
    "вечера": {h: h + 12 for h in range(5, 12)},
    "ночи": {12: 0, **{h: h for h in range(1, 5)}, 10: 22, 11: 23},
}

_TIME_HINT = "expected something like 8:30, 20:00, 0830, 8h30 or 8pm"


def _clock(text: str) -> tuple[int, int]:
    for pattern in (_HOUR_MINUTE_RE, _COMPACT_RE):
        match = pattern.match(text)
        if match:
            if len(match.group(2)) != 2:
                raise ValueError(f"minutes need two digits in {text!r} (8:05, not 8:5)")
            return int(match.group(1)), int(match.group(2))
    match = _HOUR_RE.match(text)
    if match:
        return int(match.group(1)), 0
    raise ValueError(f"not a time of day: {text!r}; {_TIME_HINT}")


def _apply_meridiem(hour: int, meridiem: str) -> int:
    if meridiem in _RU_DAY_PARTS:
        hours = _RU_DAY_PARTS[meridiem]
        if hour not in hours:
            raise ValueError(f"«{hour} {meridiem}» is not a usual time; write it as 24-hour time")
        return hours[hour]
    if not 1 <= hour <= 12:
        raise ValueError(f"with am/pm the hour must be between 1 and 12, got {hour}")
    return hour % 12 + (12 if meridiem.startswith("p") else 0)


def parse_local_time(text: str) -> time:
    """A wall-clock time as people type it.

    Accepted: "8", "08", "8:30", "08:30", "8.30" (the dot separates minutes: 8:30, not 8½ hours),
    "8h30", "8ч30", "8h"/"8ч" (8:00), "0830"/"830" (HHMM), "20:00", "8:30 pm", "8pm", "8 am",
    "8 a.m.", Russian day parts ("8 утра", "2 дня", "8 вечера", "2 ночи", "11 ночи"), and
    "noon"/"полдень", "midnight"/"полночь". Minutes always have two digits ("8.5" is refused).
    Raises ValueError with the reason otherwise; "24:00" is refused (midnight is 0:00).
    """
    if len(text) > MAX_TIME_TEXT:
        raise ValueError(f"too long for a time of day (more than {MAX_TIME_TEXT} characters)")
    cleaned = _normalize(text)
    if not cleaned:
        raise ValueError(f"no time given; {_TIME_HINT}")
    if cleaned in _TIME_WORDS:
        return _TIME_WORDS[cleaned]
    meridiem = ""
    match = _MERIDIEM_RE.match(cleaned)
    if match and match.group(1):
        cleaned, meridiem = match.group(1), match.group(2).replace(".", "")
    hour, minute = _clock(cleaned)
    if meridiem:
        hour = _apply_meridiem(hour, meridiem)
    if hour == 24 and minute == 0:
        raise ValueError("24:00 is not a time of day; midnight is 0:00")
    if hour > 23:
        raise ValueError(f"the hour must be between 0 and 23, got {hour}")
    if minute > 59:
        raise ValueError(f"the minutes must be between 00 and 59, got {minute:02d}")
    return time(hour, minute)


# --- Weekdays -----------------------------------------------------------------------------

_DAY_NAMES = (
    ("mo", "mon", "monday", "mondays",
     "пн", "пон", "понед", "понедельник", "понедельника", "понедельникам", "понедельники"),
    ("tu", "tue", "tues", "tuesday", "tuesdays",
     "вт", "втр", "вторник", "вторника", "вторникам", "вторники"),
    ("we", "wed", "weds", "wednesday", "wednesdays",
     "ср", "сре", "среда", "среду", "среды", "средам"),
    ("th", "thu", "thur", "thurs", "thursday", "thursdays",
     "чт", "чтв", "чет", "четв", "четверг", "четверга", "четвергам", "четверги"),
    ("fr", "fri", "friday", "fridays",
     "пт", "птн", "пят", "пятница", "пятницу", "пятницы", "пятницам"),
    ("sa", "sat", "saturday", "saturdays",
     "сб", "суб", "сбт", "суббота", "субботу", "субботы", "субботам"),
    ("su", "sun", "sunday", "sundays",
     "вс", "вск", "вос", "воскр", "воскресенье", "воскресенья", "воскресеньям"),
)
_DAYS = {name: day for day, names in enumerate(_DAY_NAMES) for name in names}
_GROUPS = {
    "daily": EVERY_DAY, "everyday": EVERY_DAY, "ежедневно": EVERY_DAY,
    "weekdays": WORKDAYS, "workdays": WORKDAYS, "будни": WORKDAYS, "будням": WORKDAYS,
    "weekends": WEEKEND, "weekend": WEEKEND, "выходные": WEEKEND, "выходным": WEEKEND,
}
_PHRASES = (
    (re.compile(r"\b(?:every|each|all) days?\b"), "daily"),
    (re.compile(r"(?<!\w)(?:каждый день|все дни)(?!\w)"), "daily"),
    (re.compile(r"(?<!\w)рабоч(?:ие|им) дн(?:и|ям)(?!\w)"), "будни"),
    (re.compile(r"\bwork ?days?\b"), "workdays"),
)
_FILLERS = {"and", "on", "every", "each", "from", "и", "в", "во", "с", "со",
            "каждый", "каждую", "каждое", "каждая"}
_RANGE_WORDS = {"-", "to", "through", "thru", "till", "until", "до", "по"}
_SEPARATORS = re.compile(r"[\s,;/+&.]+")


def _day_range(first: int, last: int) -> int:
    """Days from `first` to `last` going forward, wrapping past Sunday (fri-mon = Fri..Mon)."""
    mask, day = 0, first
    while True:
        mask |= 1 << day
        if day == last:
            return mask
        day = (day + 1) % 7


def _weekday_tokens(text: str) -> list[str]:
    cleaned = _normalize(text)
    for pattern, replacement in _PHRASES:
        cleaned = pattern.sub(replacement, cleaned)
    cleaned = re.sub(r"[-‐‑‒–—―−]", " - ", cleaned)
    return [token for token in _SEPARATORS.split(cleaned) if token]


def parse_weekdays(text: str) -> int:
    """A weekday mask from what people type.

    "daily"/"every day"/"каждый день"/"ежедневно" → every day; "weekdays"/"будни"/"рабочие дни"
    → Mon–Fri; "weekends"/"выходные" → Sat, Sun; lists of day names or abbreviations in English
    or Russian ("mon wed fri", "Mon,Wed,Fri", "пн ср пт", "по понедельникам и средам"), ranges
    ("mon-fri", "пн–пт", "с пн по пт", "mon to fri"; "fri-mon" wraps past Sunday), and unions of
    all these ("weekends, wed"). Raises ValueError naming what it did not understand.
    """
    if len(text) > MAX_WEEKDAYS_TEXT:
        raise ValueError(f"too long for a list of days (more than {MAX_WEEKDAYS_TEXT} characters)")
    tokens = _weekday_tokens(text)
    mask = 0
    previous_day: int | None = None
    position = 0
    while position < len(tokens):
        token = tokens[position]
        position += 1
        if token in _RANGE_WORDS and previous_day is not None:
            following = tokens[position] if position < len(tokens) else ""
            if following not in _DAYS:
                raise ValueError(f"a range of days needs a day after {token!r}")
            mask |= _day_range(previous_day, _DAYS[following])
            previous_day = None
            position += 1
        elif token in _DAYS:
            previous_day = _DAYS[token]
            mask |= 1 << previous_day
        elif token in _GROUPS:
            previous_day = None
            mask |= _GROUPS[token]
        elif token in _FILLERS or (token == "по" and previous_day is None):
            continue
        elif token in _RANGE_WORDS:
            raise ValueError(f"a range of days needs a day before {token!r}")
        else:
            raise ValueError(f"unknown day: {token!r}; expected e.g. mon wed fri, пн-пт, daily")
    if not mask:
        raise ValueError("no days given; expected e.g. mon wed fri, пн-пт, daily")
    return mask
