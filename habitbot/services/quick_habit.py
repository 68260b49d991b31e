"""The one-message way to create a habit: `/new Read 20 pages daily 08:30`.

From the end of the text: reminder times (`08:30`, `8pm`, several allowed), then how often
(`daily`, `mon wed fri`, `пн-пт`, `3 times a week`, `3 раза в неделю`, `3x/week`), then an
optional target (`20 pages`, `max 2 cups`, `не больше 2 чашек`); what is left is the name.
"""

from __future__ import annotations

import re
from datetime import time

from habitbot.models.habits import ALL_WEEKDAYS
from habitbot.services import schedules
from habitbot.services.habits import HabitDraft, HabitError, clean_name, parse_amount

_TIME_TOKEN = re.compile(
    r"^(\d{1,2}[:.h]\d{2}|\d{1,2}\s?(?:am|pm)|\d{1,2}[:.]\d{2}\s?(?:am|pm))$", re.IGNORECASE)
# Both run on the words joined by single spaces, so every gap is one optional space: no two
# quantifiers next to each other can share characters, and matching stays linear.
_PER_WEEK = re.compile(
    r"(?:^| )(\d) ?(?:x|×|times?|раза?|раз)(?: ?(?:a|per|/|в))? ?(?:week|wk|неделю|нед)\.?$",
    re.IGNORECASE)
_TARGET = re.compile(
    r"^(?P<name>.*?) (?:(?P<most>≤|<=|max|at most|up to|не больше|не более|максимум|до) ?)?"
    r"(?P<amount>\d+(?:[.,]\d+)?) ?(?P<unit>[^\d ][^\d]{0,31})?$", re.IGNORECASE)
MAX_TEXT = 400  # a name of 100 characters, a target, a schedule and five times fit easily


def _take_times(words: list[str]) -> list[time]:
    found: list[time] = []
    while words:
        candidate = words[-1]
        if len(words) >= 2 and words[-1].lower() in ("am", "pm"):
            candidate = f"{words[-2]} {words[-1]}"
        if not _TIME_TOKEN.match(candidate):
            break
        found.append(schedules.parse_local_time(candidate))
        del words[-(2 if " " in candidate else 1):]
    return sorted(set(found))


def _take_frequency(words: list[str]) -> tuple[str, int, int] | None:
    text = " ".join(words)
    per_week = _PER_WEEK.search(text)
    if per_week:
        count = int(per_week.group(1))
        if not 1 <= count <= 7:
            raise HabitError("times_per_week_range")
        del words[len(text[:per_week.start()].split()):]
        if count == 7:
            return "daily", ALL_WEEKDAYS, 7
        return "times_per_week", ALL_WEEKDAYS, count
    for size in range(min(4, len(words)), 0, -1):
        phrase = " ".join(words[-size:])
        try:
            mask = schedules.parse_weekdays(phrase)
        except ValueError:
            continue
        del words[-size:]
        if mask == ALL_WEEKDAYS:
            return "daily", ALL_WEEKDAYS, 7
        return "weekdays", mask, bin(mask).count("1")
    return None


def parse_quick(text: str) -> HabitDraft:
    """Raise HabitError (or ValueError from a malformed time) with a reason to show."""
    if len(text) > MAX_TEXT:
        raise HabitError("text_too_long", limit=MAX_TEXT)
    words = text.split()
    if not words:
        raise HabitError("name_empty")
    times = _take_times(words)
    frequency = _take_frequency(words) or ("daily", ALL_WEEKDAYS, 7)
    rest = " ".join(words)
    draft = HabitDraft(name=rest, reminder_times=times, frequency=frequency[0],
                       weekdays=frequency[1], times_per_week=frequency[2])
    target = _TARGET.match(rest)
    if target and target.group("name").strip():
        draft.name = target.group("name")
        draft.kind = "measurable"
        draft.target_value = parse_amount(target.group("amount"))
        draft.target_unit = (target.group("unit") or "").strip() or None
        draft.target_direction = "at_most" if target.group("most") else "at_least"
    draft.name = clean_name(draft.name)
    return draft
