"""Progress of one habit: streaks, strength, completion rates, the week so far and the calendar.

Every number the product shows about a habit's progress comes from here. The module is pure:
plain dataclasses in (`HabitSpec`, `Checkin`, rest periods, the user's `today`), dataclasses
out; no database, no clock, no I/O. All dates are the user's local dates (see `local_day`).
Each function makes a few linear passes over the days from the habit's start to the end of the
current week.

Rules
-----
Due days. A day is *neutral* (it neither counts for nor against the habit) when it is before
`start`, after `archived_on`, inside a paused range or a rest period (both ranges inclusive; a
pause without an end lasts until today), or, for `weekdays`, when its weekday bit is not set
(bit 0 = Monday ... bit 6 = Sunday). A check-in on a neutral day counts for nothing (only
`done_today` looks at it). Every other day up to today is *due*: for `daily` and `weekdays`
each due day is judged on its own; for `times_per_week` every such day is a candidate and
success is judged per ISO week (Monday to Sunday) by count.

Success. A "done" check-in is a success for a boolean habit; for a measurable one when
value >= target (`at_least`) or value <= target (`at_most`); a "done" without a value is a
success in both directions. An `at_least` value below the target is *partial*, worth value/target
in the strength (a failure everywhere else). For `at_most`, a past due day without a check-in
counts as value 0, i.e. a success. A "skipped" check-in makes its day neutral. Today counts only
once it is a success: until then it is neutral for every number, never a failure.

Streaks (`daily`, `weekdays`; unit "days"): the run of successes over due days, neutral days
passed over. The current streak ends today if today is a success, otherwise at the last due day
before it. Streaks (`times_per_week`; unit "weeks"): a week's *available* days are its candidate
days that are not neutral (future days of the current week count unless a known rest period,
pause or the archive date rules them out); its target is ceil(times_per_week * available / 7),
so a full week needs `times_per_week` and a habit started on a Thursday needs ceil(4n/7) in its
first week. A week with no available day is neutral; a week with done >= target is met; the
current week that has not met its target yet is neutral; any other week breaks the run.
The best streak is the longest run in the whole history, in the same unit.

Strength (0..1), after Loop Habit Tracker. Starting from 0 at `start`, for each due day up to
today: score = score * m + value * (1 - m), m = 0.5 ** (sqrt(f) / 13), f = 1 for daily, k/7 for
weekdays with k days set, n/7 for n times per week; neutral days leave the score unchanged. A
daily habit (or weekdays with all seven set) uses the day's own value: 1 for a success, 0 for a
failure, min(1, value/target) for `at_least`. Other weekday schedules use Loop's rolling value:
min(1, credits of the last 7 days / due days in those days), where credits are the values above
summed over due days. Counting over due days only, rather than Loop's fixed k, keeps a rest
period or the first week of a habit from lowering it.
A `times_per_week` habit follows the judgement its streak uses: each counted day of an ISO week
is worth that week's value — 1 for a week that met its target, whatever the days; for a past
week that did not, the credits of its best `target` days / target (so done / target for a
boolean habit, and never 1). The current week leaves the score unchanged until it is met.
Loop smooths irregular weekdays with a two-week rolling window instead, which still leaves a
once-a-week habit done on a Monday and on the next week's Sunday short of full strength.

Completion rate over the last N days (today and the N - 1 days before it): successes / due days,
None when no day in the window was due. For `times_per_week`: successes, each ISO week's
capped at that week's target, divided by the expected count n * due days in the window / 7
(pro-rata, so a 7-day window with no neutral day expects exactly n), capped at 1.

Calendar. Each day is one of: "success"; "failure"; "partial" (an `at_least` value below the
target, with its fraction); "skipped"; "rest"; "paused"; "not_due" (before start, after the
archive day, or off its weekdays); "future" (after today); "pending" (today, due, not yet a
success: no check-in, a zero, or an `at_most` value over the limit); "empty" (a past candidate
day of a `times_per_week` habit without a check-in, since only the week is judged).

`done_today` is whether today's check-in is a success, whatever the day's schedule.
`week_progress` is (successes, target) for the current ISO week: the target as above for
`times_per_week`, the number of due days of the week (future ones included) otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

Kind = Literal["boolean", "measurable"]
Direction = Literal["at_least", "at_most"]
Frequency = Literal["daily", "weekdays", "times_per_week"]
CheckinStatus = Literal["done", "skipped"]
StreakUnit = Literal["days", "weeks"]
# "pending": today, due, not yet a success; "empty": a candidate day of a times_per_week habit
# without a check-in (the week, not the day, is judged).
DayKind = Literal["success", "failure", "partial", "skipped", "rest", "paused", "not_due",
                  "future", "pending", "empty"]
DateRange = tuple[date, date]

ALL_WEEKDAYS = 0b1111111
_COUNTED = frozenset({"success", "failure", "partial", "empty"})
_AVAILABLE = _COUNTED | {"pending"}


@dataclass(frozen=True, kw_only=True)
class HabitSpec:
    start: date
    kind: Kind = "boolean"
    target_value: Decimal | None = None
    target_direction: Direction = "at_least"
    frequency: Frequency = "daily"
    weekdays: int = ALL_WEEKDAYS
    times_per_week: int = 7
    archived_on: date | None = None
    paused_ranges: Sequence[tuple[date, date | None]] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("boolean", "measurable"):
            raise ValueError(f"unknown habit kind {self.kind!r}")
        if self.target_direction not in ("at_least", "at_most"):
            raise ValueError(f"unknown target direction {self.target_direction!r}")
        if self.frequency not in ("daily", "weekdays", "times_per_week"):
            raise ValueError(f"unknown frequency {self.frequency!r}")
        if self.kind == "measurable" and (self.target_value is None or self.target_value <= 0):
            raise ValueError("a measurable habit needs a positive target_value")
        if not 1 <= self.weekdays <= ALL_WEEKDAYS:
            raise ValueError(f"weekdays mask out of range: {self.weekdays}")
        if not 1 <= self.times_per_week <= 7:
            raise ValueError(f"times_per_week out of range: {self.times_per_week}")
        for begin, end in self.paused_ranges:
            if end is not None and end < begin:
                raise ValueError(f"paused range ends before it starts: {begin}..{end}")


@dataclass(frozen=True)
class Checkin:
    day: date
    status: CheckinStatus = "done"
    value: Decimal | None = None


@dataclass(frozen=True)
class Streak:
    length: int
    unit: StreakUnit


@dataclass(frozen=True)
class DayState:
    kind: DayKind
    fraction: float | None = None  # value / target, set only for "partial"


@dataclass(frozen=True)
class Progress:
    current_streak: int
    best_streak: int
    streak_unit: StreakUnit
    strength: float
    completion_7: float | None
    completion_30: float | None
    completion_365: float | None
    done_today: bool
    week_done: int
    week_target: int

    @property
    def strength_percent(self) -> int:
        return strength_percent(self.strength)


def local_day(instant: datetime, zone: str, day_start_hour: int = 0) -> date:
    """The user's date at `instant`: the local date in `zone`, minus one day before the local
    wall-clock hour `day_start_hour` (so on DST days the day still starts at that hour)."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("local_day needs an aware datetime")
    if not 0 <= day_start_hour <= 23:
        raise ValueError(f"day_start_hour out of range: {day_start_hour}")
    local = instant.astimezone(ZoneInfo(zone))
    if local.hour < day_start_hour:
        return local.date() - timedelta(days=1)
    return local.date()


def strength_percent(strength: float) -> int:
    """Strength as a whole percent, halves rounded up."""
    return math.floor(strength * 100 + 0.5)


def summarize(spec: HabitSpec, checkins: Iterable[Checkin], rest_periods: Sequence[DateRange],
              today: date) -> Progress:
    timeline = _Timeline.for_progress(spec, checkins, rest_periods, today)
    current, best = timeline.streaks()
    week_done, week_target = timeline.current_week()
    return Progress(
        current_streak=current,
        best_streak=best,
        streak_unit=_streak_unit(spec),
        strength=timeline.strength(),
        completion_7=timeline.completion(7),
        completion_30=timeline.completion(30),
        completion_365=timeline.completion(365),
        done_today=timeline.done_today,
        week_done=week_done,
        week_target=week_target,
    )


def current_streak(spec: HabitSpec, checkins: Iterable[Checkin],
                   rest_periods: Sequence[DateRange], today: date) -> Streak:
    timeline = _Timeline.for_progress(spec, checkins, rest_periods, today)
    return Streak(timeline.streaks()[0], _streak_unit(spec))


def best_streak(spec: HabitSpec, checkins: Iterable[Checkin],
                rest_periods: Sequence[DateRange], today: date) -> Streak:
    timeline = _Timeline.for_progress(spec, checkins, rest_periods, today)
    return Streak(timeline.streaks()[1], _streak_unit(spec))


def strength(spec: HabitSpec, checkins: Iterable[Checkin], rest_periods: Sequence[DateRange],
             today: date) -> float:
    return _Timeline.for_progress(spec, checkins, rest_periods, today).strength()


def completion_rate(spec: HabitSpec, checkins: Iterable[Checkin],
                    rest_periods: Sequence[DateRange], today: date, days: int) -> float | None:
    """Share of the last `days` days (today included) that went as planned; None if none due."""
    if days < 1:
        raise ValueError(f"days must be positive: {days}")
    return _Timeline.for_progress(spec, checkins, rest_periods, today).completion(days)


def done_today(spec: HabitSpec, checkins: Iterable[Checkin], today: date) -> bool:
    return any(c.day == today and _judge(spec, c)[0] for c in checkins)


def week_progress(spec: HabitSpec, checkins: Iterable[Checkin],
                  rest_periods: Sequence[DateRange], today: date) -> tuple[int, int]:
    """(successes so far, target) for the ISO week that contains `today`."""
    return _Timeline.for_progress(spec, checkins, rest_periods, today).current_week()


def calendar(spec: HabitSpec, checkins: Iterable[Checkin], rest_periods: Sequence[DateRange],
             today: date, start: date, end: date) -> dict[date, DayState]:
    """The state of every day from `start` to `end` inclusive, for the heatmap and /stats.

    Days after `today` are "future"; today is never a "failure" (it is "pending" until it is a
    success, "partial" or "skipped").
    """
    if end < start:
        raise ValueError(f"calendar range ends before it starts: {start}..{end}")
    timeline = _Timeline(spec, checkins, rest_periods, today, start, end)
    return {start + timedelta(days=i): DayState(kind, fraction if kind == "partial" else None)
            for i, (kind, fraction) in enumerate(zip(timeline.kinds, timeline.credit,
                                                     strict=True))}


def _streak_unit(spec: HabitSpec) -> StreakUnit:
    return "weeks" if spec.frequency == "times_per_week" else "days"


def _judge(spec: HabitSpec, checkin: Checkin) -> tuple[bool, float]:
    """(success, credit in 0..1) of a "done" check-in; a skip is neither."""
    if checkin.status != "done":
        return False, 0.0
    value, target = checkin.value, spec.target_value
    if spec.kind == "boolean" or value is None or target is None:
        return True, 1.0
    if spec.target_direction == "at_most":
        return (True, 1.0) if value <= target else (False, 0.0)
    if value >= target:
        return True, 1.0
    return False, float(value / target)


def _outcome(spec: HabitSpec, checkin: Checkin | None, is_today: bool) -> tuple[DayKind, float]:
    """The state and strength credit of a day that is due (or a candidate) on the schedule."""
    if checkin is None:
        if is_today:
            return "pending", 0.0
        if spec.kind == "measurable" and spec.target_direction == "at_most":
            return "success", 1.0
        return ("empty" if spec.frequency == "times_per_week" else "failure"), 0.0
    if checkin.status == "skipped":
        return "skipped", 0.0
    success, credit = _judge(spec, checkin)
    if success:
        return "success", 1.0
    if credit > 0:
        return "partial", credit
    return ("pending" if is_today else "failure"), 0.0


def _coverage(ranges: Iterable[tuple[date, date | None]], first: int, last: int) -> list[bool]:
    """For each day ordinal first..last, whether an inclusive range covers it (open end: all)."""
    marks = [0] * (last - first + 2)
    for begin, end in ranges:
        if end is not None and end < begin:
            raise ValueError(f"range ends before it starts: {begin}..{end}")
        lo = max(begin.toordinal(), first)
        hi = last if end is None else min(end.toordinal(), last)
        if lo <= hi:
            marks[lo - first] += 1
            marks[hi - first + 1] -= 1
    covered, depth = [], 0
    for mark in marks[:-1]:
        depth += mark
        covered.append(depth > 0)
    return covered


class _Timeline:
    """The state of each day of one habit from `first` to `last`, computed in one pass.

    `kinds`/`credit` are what the calendar shows; `counted` marks the due days that count (today
    only once it is a success); `available` marks a week's non-neutral candidate days, future
    ones included.
    """

    def __init__(self, spec: HabitSpec, checkins: Iterable[Checkin],
                 rest_periods: Sequence[DateRange], today: date, first: date, last: date):
        self.spec = spec
        self.first = first.toordinal()
        self.today = today.toordinal() - self.first  # index of today, may lie outside the range
        last_ordinal = last.toordinal()
        by_day: dict[int, Checkin] = {}
        for checkin in checkins:
            ordinal = checkin.day.toordinal()
            if ordinal in by_day:
                raise ValueError(f"two check-ins on {checkin.day}")
            by_day[ordinal] = checkin
        paused = _coverage(spec.paused_ranges, self.first, last_ordinal)
        rested = _coverage(rest_periods, self.first, last_ordinal)
        mask = spec.weekdays if spec.frequency == "weekdays" else ALL_WEEKDAYS
        alive_from = spec.start.toordinal()
        alive_to = spec.archived_on.toordinal() if spec.archived_on else last_ordinal

        self.kinds: list[DayKind] = []
        self.credit: list[float] = []
        self.available: list[bool] = []
        for i in range(last_ordinal - self.first + 1):
            ordinal = self.first + i
            scheduled = (alive_from <= ordinal <= alive_to
                         and bool(mask >> ((ordinal - 1) % 7) & 1))  # ordinal 1 is a Monday
            kind: DayKind
            credit = 0.0
            if i > self.today:
                kind = "future"
            elif not scheduled:
                kind = "not_due"
            elif paused[i]:
                kind = "paused"
            elif rested[i]:
                kind = "rest"
            else:
                kind, credit = _outcome(spec, by_day.get(ordinal), i == self.today)
            self.kinds.append(kind)
            self.credit.append(credit)
            self.available.append(kind in _AVAILABLE or (
                kind == "future" and scheduled and not paused[i] and not rested[i]))
        self.counted = [kind in _COUNTED and (i != self.today or kind == "success")
                        for i, kind in enumerate(self.kinds)]
        today_checkin = by_day.get(today.toordinal())
        self.done_today = today_checkin is not None and _judge(spec, today_checkin)[0]

    @classmethod
    def for_progress(cls, spec: HabitSpec, checkins: Iterable[Checkin],
                     rest_periods: Sequence[DateRange], today: date) -> _Timeline:
        """Whole ISO weeks from the habit's first week through the current one."""
        first = min(spec.start, today)
        first -= timedelta(days=first.weekday())
        last = today + timedelta(days=6 - today.weekday())
        return cls(spec, checkins, rest_periods, today, first, last)

    def _is_success(self, i: int) -> bool:
        return self.kinds[i] == "success"

    def _week(self, week: int) -> tuple[int, int]:
        """(successes, target) of the week starting at index 7 * week."""
        days = range(7 * week, 7 * week + 7)
        done = sum(1 for i in days if self._is_success(i))
        available = sum(1 for i in days if self.available[i])
        if self.spec.frequency == "times_per_week":
            return done, -(-self.spec.times_per_week * available // 7)
        return done, available

    def current_week(self) -> tuple[int, int]:
        return self._week(self.today // 7)

    def streaks(self) -> tuple[int, int]:
        """(current, best), in days or in weeks."""
        run = best = 0
        if self.spec.frequency == "times_per_week":
            for week in range(len(self.kinds) // 7):
                done, target = self._week(week)
                if target == 0:
                    continue
                if done >= target:
                    run += 1
                elif week != self.today // 7:
                    run = 0
                best = max(best, run)
        else:
            for i, counted in enumerate(self.counted):
                if counted:
                    run = run + 1 if self._is_success(i) else 0
                    best = max(best, run)
        return run, best

    def strength(self) -> float:
        spec = self.spec
        if spec.frequency == "times_per_week":
            return self._weekly_strength()
        frequency = spec.weekdays.bit_count() / 7 if spec.frequency == "weekdays" else 1.0
        multiplier = 0.5 ** (math.sqrt(frequency) / 13)
        rolling = frequency < 1
        score = credits = 0.0
        due = 0
        for i, counted in enumerate(self.counted):
            if i >= 7 and self.counted[i - 7]:
                credits -= self.credit[i - 7]
                due -= 1
            if not counted:
                continue
            credits += self.credit[i]
            due += 1
            value = min(1.0, max(0.0, credits) / due) if rolling else self.credit[i]
            score = score * multiplier + value * (1 - multiplier)
        return score

    def _weekly_strength(self) -> float:
        """Every counted day of a week is worth that week's value (see the module docstring)."""
        multiplier = 0.5 ** (math.sqrt(self.spec.times_per_week / 7) / 13)
        current = self.today // 7
        score = 0.0
        for week in range(len(self.kinds) // 7):
            counted = [i for i in range(7 * week, 7 * week + 7) if self.counted[i]]
            if not counted:
                continue
            done, target = self._week(week)
            if done >= target:
                value = 1.0
            elif week == current:
                continue  # judged once it is met or over, as the streak does
            else:
                best = sorted((self.credit[i] for i in counted), reverse=True)[:target]
                value = sum(best) / target
            for _ in counted:
                score = score * multiplier + value * (1 - multiplier)
        return score

    def completion(self, days: int) -> float | None:
        end = self.today + 1
        window = range(max(0, end - days), max(0, end))
        due = sum(1 for i in window if self.counted[i])
        if due == 0:
            return None
        if self.spec.frequency != "times_per_week":
            return sum(1 for i in window if self._is_success(i)) / due
        achieved = 0
        for week in range(window.start // 7, (window.stop - 1) // 7 + 1):
            in_window = range(max(window.start, 7 * week), min(window.stop, 7 * week + 7))
            achieved += min(sum(1 for i in in_window if self._is_success(i)), self._week(week)[1])
        return min(1.0, achieved / (self.spec.times_per_week * due / 7))
