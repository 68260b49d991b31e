"""Habit progress: streaks, strength, completion rates, week progress, calendar and local days.

Dates are hand-picked: MON is Monday 2026-06-01 and day(n) the n-th day after it, so day(0),
day(7), day(14) are Mondays and day(6), day(13) Sundays.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from habitbot.services.progress import (
    Checkin,
    DayState,
    HabitSpec,
    Progress,
    Streak,
    best_streak,
    calendar,
    completion_rate,
    current_streak,
    done_today,
    local_day,
    strength,
    strength_percent,
    summarize,
    week_progress,
)

MON = date(2026, 6, 1)
DAILY_M = 0.5 ** (1 / 13)
MON_WED_FRI = 0b0010101


def day(n: int) -> date:
    return MON + timedelta(days=n)


def days(first: int, last: int) -> list[date]:
    return [day(n) for n in range(first, last + 1)]


def done(*when: date, value: str | None = None) -> list[Checkin]:
    return [Checkin(d, "done", None if value is None else Decimal(value)) for d in when]


def skipped(*when: date) -> list[Checkin]:
    return [Checkin(d, "skipped") for d in when]


def daily(**overrides) -> HabitSpec:
    return HabitSpec(**{"start": MON, **overrides})


def measurable(target: str, direction: str = "at_least", **overrides) -> HabitSpec:
    return daily(kind="measurable", target_value=Decimal(target), target_direction=direction,
                 **overrides)


def loop_score(values: list[float], multiplier: float, score: float = 0.0) -> float:
    for value in values:
        score = score * multiplier + value * (1 - multiplier)
    return score


def streaks(spec, checkins, today, rest=()):
    return (current_streak(spec, checkins, list(rest), today).length,
            best_streak(spec, checkins, list(rest), today).length)


# Daily streaks


def test_daily_streak_includes_today_once_it_is_done():
    checkins = done(*days(0, 4))
    assert current_streak(daily(), checkins, [], day(4)) == Streak(5, "days")
    assert best_streak(daily(), checkins, [], day(4)) == Streak(5, "days")


def test_unfinished_today_keeps_the_streak_that_ended_yesterday():
    checkins = done(*days(0, 3))
    assert streaks(daily(), checkins, day(4)) == (4, 4)
    assert calendar(daily(), checkins, [], day(4), day(4), day(4)) == {day(4): DayState("pending")}


def test_missed_yesterday_ends_the_current_streak_but_not_the_best():
    assert streaks(daily(), done(*days(0, 2)), day(4)) == (0, 3)


def test_skip_in_the_middle_neither_breaks_nor_extends_the_streak():
    checkins = done(day(0), day(1), day(3), day(4)) + skipped(day(2))
    assert streaks(daily(), checkins, day(4)) == (4, 4)


def test_skipped_today_keeps_the_streak_without_adding_to_it():
    checkins = done(*days(0, 3)) + skipped(day(4))
    assert streaks(daily(), checkins, day(4)) == (4, 4)


def test_rest_week_keeps_the_streak():
    rest = [(day(7), day(13))]
    checkins = done(*days(0, 6), day(14), day(15))
    assert streaks(daily(), checkins, day(15), rest) == (9, 9)


def test_check_in_on_a_rest_day_does_not_extend_the_streak():
    rest = [(day(7), day(13))]
    checkins = done(*days(0, 6), day(10), day(14), day(15))
    assert streaks(daily(), checkins, day(15), rest) == (9, 9)
    assert calendar(daily(), checkins, rest, day(15), day(10), day(10))[day(10)].kind == "rest"


def test_best_streak_survives_a_gap_and_a_later_shorter_run():
    checkins = done(*days(0, 4), *days(6, 8), day(10), day(11))
    assert streaks(daily(), checkins, day(12)) == (2, 5)


def test_best_streak_is_the_later_run_when_it_is_longer():
    checkins = done(day(0), day(1), *days(3, 9))
    assert streaks(daily(), checkins, day(9)) == (7, 7)


# Weekday schedules


def test_mon_wed_fri_streak_passes_over_off_days_and_weekends():
    spec = daily(frequency="weekdays", weekdays=MON_WED_FRI)
    checkins = done(day(0), day(2), day(4), day(7), day(9), day(11))
    assert streaks(spec, checkins, day(12)) == (6, 6)  # Saturday: not due
    assert streaks(spec, checkins, day(14)) == (6, 6)  # Monday, not done yet
    assert streaks(spec, checkins, day(15)) == (0, 6)  # Tuesday: Monday was missed


def test_mon_wed_fri_missed_wednesday_breaks_the_streak():
    spec = daily(frequency="weekdays", weekdays=MON_WED_FRI)
    checkins = done(day(0), day(2), day(4), day(7), day(11))
    assert streaks(spec, checkins, day(13)) == (1, 4)


def test_check_in_on_an_off_day_is_ignored():
    spec = daily(frequency="weekdays", weekdays=MON_WED_FRI)
    checkins = done(day(0), day(1), day(2))
    assert streaks(spec, checkins, day(3)) == (2, 2)
    assert calendar(spec, checkins, [], day(3), day(1), day(1)) == {day(1): DayState("not_due")}


def test_weekdays_with_every_day_set_behave_like_daily():
    spec = daily(frequency="weekdays", weekdays=0b1111111)
    checkins = done(*days(0, 9), day(12))
    assert streaks(spec, checkins, day(13)) == streaks(daily(), checkins, day(13)) == (1, 10)
    assert strength(spec, checkins, [], day(13)) == strength(daily(), checkins, [], day(13))


# Times per week: streaks in weeks


def three_a_week(**overrides) -> HabitSpec:
    return daily(frequency="times_per_week", times_per_week=3, **overrides)


def test_three_times_a_week_streak_counts_weeks():
    checkins = done(day(0), day(2), day(4), day(7), day(8), day(9), day(14), day(15), day(16))
    assert current_streak(three_a_week(), checkins, [], day(16)) == Streak(3, "weeks")
    assert best_streak(three_a_week(), checkins, [], day(16)) == Streak(3, "weeks")


def test_unfinished_current_week_neither_counts_nor_breaks():
    checkins = done(day(0), day(2), day(4), day(7), day(8), day(9), day(14))
    assert streaks(three_a_week(), checkins, day(15)) == (2, 2)
    assert streaks(three_a_week(), checkins, day(20)) == (2, 2)  # Sunday, still unfinished
    assert streaks(three_a_week(), checkins, day(21)) == (0, 2)  # that week is over


def test_a_failed_past_week_breaks_the_weekly_streak():
    checkins = done(day(0), day(2), day(4), day(7), day(8), day(9), day(14), day(15),
                    day(21), day(22), day(23))
    assert streaks(three_a_week(), checkins, day(23)) == (1, 2)


def test_week_covered_by_rest_is_neutral():
    checkins = done(day(0), day(2), day(4), day(14), day(16), day(18))
    assert streaks(three_a_week(), checkins, day(20), [(day(7), day(13))]) == (2, 2)
    assert streaks(three_a_week(), checkins, day(20)) == (1, 1)


def test_week_of_skips_is_neutral():
    checkins = done(day(0), day(2), day(4), day(14), day(16), day(18)) + skipped(*days(7, 13))
    assert streaks(three_a_week(), checkins, day(20)) == (2, 2)


def test_rest_days_lower_the_weekly_target_pro_rata():
    rest = [(day(7), day(10))]  # Monday to Thursday: 3 days left, ceil(3 * 3 / 7) = 2
    checkins = done(day(0), day(2), day(4), day(11), day(12))
    assert week_progress(three_a_week(), checkins, rest, day(13)) == (2, 2)
    assert streaks(three_a_week(), checkins, day(14), rest) == (2, 2)


def test_first_week_of_a_habit_started_on_thursday_needs_two_of_four_days():
    spec = three_a_week(start=day(3))
    assert week_progress(spec, done(day(3)), [], day(3)) == (1, 2)
    assert streaks(spec, done(day(3), day(6)), day(7)) == (1, 1)


def test_known_future_rest_lowers_the_current_week_target():
    rest = [(day(11), day(13))]  # Friday to Sunday: Monday to Thursday left
    assert week_progress(three_a_week(), done(day(7)), rest, day(7)) == (1, 2)


# Strength


def test_daily_strength_halves_after_exactly_13_missed_days():
    checkins = done(*days(0, 999))
    before = strength(daily(), checkins, [], day(999))
    after = strength(daily(), checkins, [], day(1013))  # days 1000..1012 missed, today pending
    assert before == pytest.approx(1 - DAILY_M ** 1000, abs=1e-9)
    assert after == pytest.approx(before * 0.5, abs=1e-9)
    assert after == pytest.approx(0.5, abs=1e-9)


def test_daily_strength_grows_back_after_misses():
    checkins = done(*days(0, 999), *days(1013, 1017))
    expected = loop_score([1.0] * 1000 + [0.0] * 13 + [1.0] * 5, DAILY_M)
    assert strength(daily(), checkins, [], day(1017)) == pytest.approx(expected, abs=1e-9)
    assert strength(daily(), checkins, [], day(1017)) > strength(daily(), checkins, [], day(1012))


def test_first_done_day_gives_one_step_of_strength():
    assert strength(daily(), done(day(0)), [], day(0)) == pytest.approx(1 - DAILY_M, abs=1e-12)
    assert strength(daily(), [], [], day(0)) == 0.0


def test_neutral_days_leave_strength_unchanged():
    checkins = done(*days(0, 9)) + skipped(day(15), day(16))
    paused = daily(paused_ranges=[(day(17), day(18))])
    value = strength(paused, checkins, [(day(10), day(14))], day(19))  # today pending
    assert value == pytest.approx(1 - DAILY_M ** 10, abs=1e-12)


def test_three_a_week_strength_credits_each_day_by_its_weeks_judgement():
    multiplier = 0.5 ** (math.sqrt(3 / 7) / 13)
    # week 0 (days 0..6) failed with 2 of 3: each of its days is worth 2/3; week 1 (days 7, 8)
    # has not met its target yet and, like the streak, leaves the strength where it was
    value = strength(three_a_week(), done(day(0), day(4)), [], day(8))
    assert value == pytest.approx(loop_score([2 / 3] * 7, multiplier), abs=1e-12)
    assert strength(three_a_week(), done(day(0), day(4)), [], day(13)) == value


def test_a_three_a_week_habit_done_three_times_every_week_stays_at_full_value():
    multiplier = 0.5 ** (math.sqrt(3 / 7) / 13)
    checkins = [c for week in range(20) for c in done(day(7 * week), day(7 * week + 2),
                                                      day(7 * week + 4))]
    value = strength(three_a_week(), checkins, [], day(139))
    assert value == pytest.approx(1 - multiplier ** 139, abs=1e-12)


def test_a_three_a_week_habit_met_every_week_on_any_days_converges_to_full_strength():
    multiplier = 0.5 ** (math.sqrt(3 / 7) / 13)
    # three days a week, never the same three: the week is met, so every day counts fully
    patterns = [(0, 1, 2), (4, 5, 6), (0, 3, 6), (1, 2, 5)]
    checkins = [c for week in range(60)
                for c in done(*(day(7 * week + d) for d in patterns[week % 4]))]
    today = day(7 * 59 + 6)  # Sunday of week 59, the week already met on Saturday
    value = strength(three_a_week(), checkins, [], today)
    assert value == pytest.approx(1 - multiplier ** (7 * 60 - 1), abs=1e-12)
    assert value > 0.999
    assert streaks(three_a_week(), checkins, today) == (60, 60)


def test_once_a_week_on_varying_days_for_four_years_is_full_strength_like_its_streak():
    start = date(2022, 6, 6)  # a Monday
    weeks = 209
    # the weekday wanders: Monday, Thursday, Sunday, Wednesday, ... (3 or 10 days apart)
    checkins = done(*(start + timedelta(days=7 * week + (week * 3) % 7) for week in range(weeks)))
    today = start + timedelta(days=7 * weeks - 1)  # the last Sunday
    spec = HabitSpec(start=start, frequency="times_per_week", times_per_week=1)
    progress = summarize(spec, checkins, [], today)
    assert (progress.current_streak, progress.best_streak) == (weeks, weeks)
    assert progress.completion_365 == 1.0
    assert progress.strength > 0.99
    assert progress.strength_percent == 100


def test_loop_reference_weekly_on_alternating_ends_of_the_week_converges_to_full():
    # Loop's test_irregularNonDaily: once a week, on a Monday and then on the next Sunday
    spec = HabitSpec(start=MON, frequency="times_per_week", times_per_week=1)
    checkins = done(*(day(14 * k + d) for k in range(100) for d in (0, 13)))
    assert strength(spec, checkins, [], day(1399)) == pytest.approx(1.0, abs=1e-3)


def test_loop_reference_weekly_habit_reaches_99_percent_within_nine_months():
    # Loop's shouldAchieveHighScoreInReasonableTime: 39 weekly repetitions
    spec = HabitSpec(start=MON, frequency="times_per_week", times_per_week=1)
    assert strength(spec, done(*(day(7 * i) for i in range(39))), [], day(7 * 38)) > 0.99


@pytest.mark.parametrize(("per_week", "expected"), [(3, 2 / 3), (4, 0.5)])
def test_loop_reference_two_done_of_each_weeks_target_converges_to_their_share(per_week,
                                                                               expected):
    # Loop's test_imperfectNonDaily: two repetitions every week of a 3 (then 4) a week habit
    spec = HabitSpec(start=MON, frequency="times_per_week", times_per_week=per_week)
    checkins = done(*(day(7 * week + d) for week in range(100) for d in (0, 1)))
    assert strength(spec, checkins, [], day(700)) == pytest.approx(expected, abs=1e-6)


def test_loop_reference_six_a_week_done_or_skipped_every_day_converges_to_full():
    # Loop's test_perfectNonDailyWithSkips: done Monday to Friday, weekends skipped
    spec = HabitSpec(start=MON, frequency="times_per_week", times_per_week=6)
    checkins = [c for week in range(72) for c in done(*days(7 * week, 7 * week + 4))
                + skipped(day(7 * week + 5), day(7 * week + 6))]
    assert strength(spec, checkins, [], day(7 * 72 - 1)) == pytest.approx(1.0, abs=1e-6)


def test_weekly_habit_that_stops_decays_week_by_week():
    multiplier = 0.5 ** (math.sqrt(1 / 7) / 13)
    spec = HabitSpec(start=MON, frequency="times_per_week", times_per_week=1)
    checkins = done(*(day(7 * week + 2) for week in range(30)))  # Wednesdays, weeks 0..29
    kept = strength(spec, checkins, [], day(7 * 30))  # Monday of week 30, not done yet
    assert kept == pytest.approx(1 - multiplier ** 210, abs=1e-12)
    # a week not yet lost is not a loss: the strength holds through week 30's Sunday
    assert strength(spec, checkins, [], day(7 * 31 - 1)) == kept
    # four weeks missed: 28 days at value 0, i.e. more than halved after about five weeks
    faded = strength(spec, checkins, [], day(7 * 34))
    assert faded == pytest.approx(kept * multiplier ** 28, abs=1e-12)
    mondays = [strength(spec, checkins, [], day(7 * week)) for week in (31, 32, 33, 34, 40)]
    assert all(later < earlier for earlier, later in zip(mondays, mondays[1:], strict=False))
    assert strength(spec, checkins, [], day(7 * 36)) < kept / 2
    # coming back raises it again once the week is met
    back = checkins + done(day(7 * 34 + 1))
    assert strength(spec, back, [], day(7 * 34 + 1)) > faded


def test_measurable_weekly_partials_never_make_a_failed_week_full():
    # twice a week at least 10: four halves are 2.0 of credit, but no day met the target, so
    # the week failed and is worth its best two days, 0.5 + 0.5 out of 2
    multiplier = 0.5 ** (math.sqrt(2 / 7) / 13)
    spec = measurable("10", frequency="times_per_week", times_per_week=2)
    checkins = [c for d in days(0, 3) for c in done(d, value="5")]
    assert streaks(spec, checkins, day(7)) == (0, 0)
    value = strength(spec, checkins, [], day(7))
    assert value == pytest.approx(loop_score([0.5] * 7, multiplier), abs=1e-12)


def test_weekday_strength_ignores_off_days_and_rolls_over_due_days():
    multiplier = 0.5 ** (math.sqrt(3 / 7) / 13)
    spec = daily(frequency="weekdays", weekdays=MON_WED_FRI)
    value = strength(spec, done(day(0), day(2)), [], day(7))  # Friday missed
    assert value == pytest.approx(loop_score([1.0, 1.0, 2 / 3], multiplier), abs=1e-12)


def test_measurable_strength_uses_the_capped_fraction_of_the_target():
    checkins = [*done(day(0), value="5"), *done(day(1), value="10"), *done(day(2), value="20"),
                *done(day(3), value="0")]
    value = strength(measurable("10"), checkins, [], day(4))
    assert value == pytest.approx(loop_score([0.5, 1.0, 1.0, 0.0], DAILY_M), abs=1e-12)


# Loop Habit Tracker's published scores (ScoreListTest), newest first, to its 1e-6
LOOP_TWENTY_DAYS = [0.655747, 0.636894, 0.617008, 0.596033, 0.573910, 0.550574, 0.525961,
                    0.500000, 0.472617, 0.443734, 0.413270, 0.381137, 0.347244, 0.311495,
                    0.273788, 0.234017, 0.192067, 0.147820, 0.101149, 0.051922]
LOOP_TWENTY_DAYS_WITH_SKIPS = [0.596033, 0.573910, 0.550574, 0.525961, 0.500000, 0.472617,
                               0.472617, 0.443734, 0.413270, 0.381137, 0.347244, 0.347244,
                               0.347244, 0.311495, 0.273788, 0.234017, 0.192067, 0.147820,
                               0.101149, 0.051922]


def test_daily_strength_matches_loops_published_scores():
    checkins = done(*days(0, 19))
    ours = [strength(daily(), checkins, [], day(19 - back)) for back in range(20)]
    assert ours == pytest.approx(LOOP_TWENTY_DAYS, abs=1e-6)


def test_daily_strength_with_skips_matches_loops_published_scores():
    skips = {day(19 - 5), day(19 - 10), day(19 - 11)}  # Loop's offsets from today
    checkins = done(*(d for d in days(0, 19) if d not in skips)) + skipped(*skips)
    ours = [strength(daily(), checkins, [], day(19 - back)) for back in range(20)]
    assert ours == pytest.approx(LOOP_TWENTY_DAYS_WITH_SKIPS, abs=1e-6)


def test_measurable_strength_matches_loops_published_scores():
    # NumericalAtLeastScoreListTest: twice the target every day, then half of it for 500 days
    checkins = [c for d in days(0, 19) for c in done(d, value="20")]
    ours = [strength(measurable("10"), checkins, [], day(19 - back)) for back in range(20)]
    assert ours == pytest.approx(LOOP_TWENTY_DAYS, abs=1e-6)
    halves = [c for d in days(0, 499) for c in done(d, value="5")]
    assert strength(measurable("10"), halves, [], day(499)) == pytest.approx(0.5, abs=1e-6)
    over = done(day(0), value="100000")
    assert strength(measurable("10"), over, [], day(0)) == pytest.approx(0.051922, abs=1e-6)


def test_strength_percent_rounds_halves_up():
    assert [strength_percent(s) for s in (0.0, 0.125, 0.5, 0.994, 1.0)] == [0, 13, 50, 99, 100]


# Measurable habits


def test_at_least_partial_value_breaks_the_streak_and_shows_its_fraction():
    spec = measurable("10")
    checkins = [*done(day(0), value="10"), *done(day(1), value="4"),
                *done(day(2), value="12"), *done(day(3), value="5")]
    assert streaks(spec, checkins, day(3)) == (1, 1)
    states = calendar(spec, checkins, [], day(3), day(0), day(3))
    assert states == {day(0): DayState("success"), day(1): DayState("partial", 0.4),
                      day(2): DayState("success"), day(3): DayState("partial", 0.5)}
    assert completion_rate(spec, checkins, [], day(3), 7) == pytest.approx(2 / 3)
    assert done_today(spec, checkins, day(3)) is False


def test_at_least_done_without_a_value_counts_as_done():
    assert streaks(measurable("10"), done(day(0), day(1)), day(1)) == (2, 2)


def test_at_most_missing_past_day_is_a_success_and_over_the_limit_a_failure():
    spec = measurable("2", "at_most")
    checkins = [*done(day(1), value="1"), *done(day(2), value="5"), *done(day(4), value="2")]
    assert streaks(spec, checkins, day(5)) == (2, 2)  # day 3 missing, day 4 at the limit
    states = calendar(spec, checkins, [], day(5), day(0), day(5))
    assert [states[d].kind for d in days(0, 5)] == [
        "success", "success", "failure", "success", "success", "pending"]
    assert completion_rate(spec, checkins, [], day(5), 7) == pytest.approx(4 / 5)


def test_at_most_over_the_limit_today_is_not_yet_a_failure():
    spec = measurable("2", "at_most")
    checkins = done(day(3), value="3")
    assert streaks(spec, checkins, day(3)) == (3, 3)
    assert calendar(spec, checkins, [], day(3), day(3), day(3))[day(3)].kind == "pending"
    assert streaks(spec, checkins, day(4)) == (0, 3)


# Paused and archived habits


def test_paused_days_keep_the_streak():
    spec = daily(paused_ranges=[(day(3), day(6))])
    checkins = done(*days(0, 2), day(7), day(8))
    assert streaks(spec, checkins, day(8)) == (5, 5)
    assert calendar(spec, checkins, [], day(8), day(4), day(4)) == {day(4): DayState("paused")}


def test_open_ended_pause_freezes_streak_strength_and_rates():
    spec = daily(paused_ranges=[(day(5), None)])
    checkins = done(*days(0, 4))
    assert streaks(spec, checkins, day(9)) == (5, 5)
    assert strength(spec, checkins, [], day(9)) == pytest.approx(1 - DAILY_M ** 5, abs=1e-12)
    assert completion_rate(spec, checkins, [], day(9), 7) == 1.0  # days 3 and 4 were due
    assert completion_rate(spec, checkins, [], day(20), 7) is None


def test_archived_habit_is_not_due_after_its_archive_day():
    spec = daily(archived_on=day(4))
    checkins = done(*days(0, 4))
    progress = summarize(spec, checkins, [], day(10))
    assert (progress.current_streak, progress.best_streak) == (5, 5)
    assert progress.strength == pytest.approx(1 - DAILY_M ** 5, abs=1e-12)
    assert progress.completion_7 == 1.0  # only day 4 was due in days 4..10
    assert (progress.week_done, progress.week_target) == (0, 0)
    assert calendar(spec, checkins, [], day(10), day(6), day(6)) == {day(6): DayState("not_due")}


def test_archive_day_itself_is_still_due():
    spec = daily(archived_on=day(4))
    assert streaks(spec, done(*days(0, 3)), day(10)) == (0, 4)


# Local days


BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


@pytest.mark.parametrize(("instant", "zone", "hour", "expected"), [
    # an ordinary night: 01:30 local with the day starting at 03:00 belongs to the day before
    (datetime(2026, 6, 10, 23, 30, tzinfo=UTC), BERLIN, 3, date(2026, 6, 10)),
    (datetime(2026, 6, 11, 1, 0, tzinfo=UTC), BERLIN, 3, date(2026, 6, 11)),
    # Berlin springs forward 2026-03-29 at 02:00 CET (01:00 UTC) straight to 03:00 CEST
    (datetime(2026, 3, 29, 0, 59, tzinfo=UTC), BERLIN, 3, date(2026, 3, 28)),  # 01:59 CET
    (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), BERLIN, 3, date(2026, 3, 29)),  # 03:00 CEST
    (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), BERLIN, 3, date(2026, 3, 29)),  # 03:30 CEST
    (datetime(2026, 3, 29, 0, 59, tzinfo=UTC), BERLIN, 2, date(2026, 3, 28)),  # 02:00 skipped
    (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), BERLIN, 2, date(2026, 3, 29)),
    # Berlin falls back 2026-10-25 at 03:00 CEST (01:00 UTC) to 02:00 CET: 02:30 happens twice
    (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), BERLIN, 3, date(2026, 10, 24)),  # 02:30 CEST
    (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), BERLIN, 3, date(2026, 10, 24)),  # 02:30 CET
    (datetime(2026, 10, 25, 2, 0, tzinfo=UTC), BERLIN, 3, date(2026, 10, 25)),  # 03:00 CET
    # New York springs forward 2026-03-08 at 02:00 EST (07:00 UTC) to 03:00 EDT
    (datetime(2026, 3, 8, 6, 59, tzinfo=UTC), NEW_YORK, 3, date(2026, 3, 7)),  # 01:59 EST
    (datetime(2026, 3, 8, 7, 0, tzinfo=UTC), NEW_YORK, 3, date(2026, 3, 8)),  # 03:00 EDT
    (datetime(2026, 3, 8, 7, 30, tzinfo=UTC), NEW_YORK, 3, date(2026, 3, 8)),
    # New York falls back 2026-11-01 at 02:00 EDT (06:00 UTC) to 01:00 EST: 01:30 twice
    (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), NEW_YORK, 2, date(2026, 10, 31)),  # 01:30 EDT
    (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), NEW_YORK, 2, date(2026, 10, 31)),  # 01:30 EST
    (datetime(2026, 11, 1, 7, 0, tzinfo=UTC), NEW_YORK, 2, date(2026, 11, 1)),  # 02:00 EST
    # midnight start: the plain local date, whatever zone the instant is given in
    (datetime(2026, 6, 1, 21, 30, tzinfo=UTC), "Europe/Moscow", 0, date(2026, 6, 2)),
    (datetime(2026, 6, 2, 6, 0, tzinfo=timezone(timedelta(hours=9))), NEW_YORK, 0,
     date(2026, 6, 1)),
])
def test_local_day_starts_at_the_wall_clock_hour_even_on_dst_days(instant, zone, hour, expected):
    assert local_day(instant, zone, hour) == expected


def test_local_day_rejects_naive_instants_and_bad_hours():
    with pytest.raises(ValueError):
        local_day(datetime(2026, 6, 1, 12, 0), BERLIN, 3)
    with pytest.raises(ValueError):
        local_day(datetime(2026, 6, 1, 12, 0, tzinfo=UTC), BERLIN, 24)


# Leap day


LEAP_START = date(2028, 2, 21)  # a Monday; 2028-02-29 is a Tuesday


def leap_days(*skip: date) -> list[date]:
    every = [LEAP_START + timedelta(days=n) for n in range(10)]  # 02-21 .. 03-01
    return [d for d in every if d not in skip]


def test_leap_day_is_a_due_day_in_streaks_and_rates():
    spec = HabitSpec(start=LEAP_START)
    full = done(*leap_days())
    assert streaks(spec, full, date(2028, 3, 1)) == (10, 10)
    assert completion_rate(spec, full, [], date(2028, 3, 1), 7) == 1.0
    missed = done(*leap_days(date(2028, 2, 29)))
    assert streaks(spec, missed, date(2028, 3, 1)) == (1, 8)
    assert completion_rate(spec, missed, [], date(2028, 3, 1), 7) == pytest.approx(6 / 7)
    assert completion_rate(spec, missed, [], date(2028, 3, 1), 30) == pytest.approx(9 / 10)


def test_leap_day_follows_its_weekday_and_its_iso_week():
    tuesdays_thursdays = HabitSpec(start=LEAP_START, frequency="weekdays", weekdays=0b0001010)
    checkins = done(date(2028, 2, 22), date(2028, 2, 24), date(2028, 3, 2))
    assert streaks(tuesdays_thursdays, checkins, date(2028, 3, 2)) == (1, 2)
    twice = HabitSpec(start=LEAP_START, frequency="times_per_week", times_per_week=2)
    checkins = done(date(2028, 2, 21), date(2028, 2, 23), date(2028, 2, 29), date(2028, 3, 5))
    assert streaks(twice, checkins, date(2028, 3, 5)) == (2, 2)


# Completion rates


def test_completion_rate_excludes_neutral_days_and_unfinished_today():
    checkins = done(*days(0, 4), day(8)) + skipped(day(6))
    checkins = [c for c in checkins if c.day != day(1) and c.day != day(5)]
    rest = [(day(7), day(7))]
    # last 7 days = days 3..9: due 3, 4, 5 (missed), 8; skip 6, rest 7, today 9 pending
    assert completion_rate(daily(), checkins, rest, day(9), 7) == pytest.approx(3 / 4)
    # last 30 days start before the habit: due 0..5 and 8, missed 1 and 5
    assert completion_rate(daily(), checkins, rest, day(9), 30) == pytest.approx(5 / 7)
    with_today = checkins + done(day(9))
    assert completion_rate(daily(), with_today, rest, day(9), 7) == pytest.approx(4 / 5)


def test_completion_rate_is_none_without_due_days():
    assert completion_rate(daily(), [], [], day(0), 7) is None
    assert completion_rate(daily(), [], [(day(0), day(9))], day(9), 7) is None
    with pytest.raises(ValueError):
        completion_rate(daily(), [], [], day(0), 0)


def test_three_a_week_completion_caps_each_week_and_prorates_the_window():
    checkins = done(*days(0, 4), day(7))
    # last 7 days = days 7..13: 6 due (today pending), expected 3 * 6 / 7, done 1
    assert completion_rate(three_a_week(), checkins, [], day(13), 7) == pytest.approx(7 / 18)
    # days 0..12 due, expected 3 * 13 / 7; week one's five count as its target of three
    assert completion_rate(three_a_week(), checkins, [], day(13), 30) == pytest.approx(28 / 39)


def test_three_a_week_window_across_two_weeks_can_be_complete():
    checkins = done(day(0), day(5), day(6), day(7), day(8), day(9))
    assert completion_rate(three_a_week(), checkins, [], day(9), 7) == 1.0


# Calendar, today and the week


def test_calendar_shows_every_kind_of_day():
    spec = measurable("10", start=day(1), paused_ranges=[(day(3), day(3))])
    checkins = [*done(day(1), value="10"), *done(day(2), value="5"),
                *skipped(day(5)), *done(day(7), value="0"), *done(day(8), day(9))]
    states = calendar(spec, checkins, [(day(4), day(4))], day(10), day(0), day(11))
    assert [states[d] for d in days(0, 11)] == [
        DayState("not_due"), DayState("success"), DayState("partial", 0.5), DayState("paused"),
        DayState("rest"), DayState("skipped"), DayState("failure"), DayState("failure"),
        DayState("success"), DayState("success"), DayState("pending"), DayState("future")]


def test_calendar_of_a_times_per_week_habit_leaves_unused_days_empty():
    states = calendar(three_a_week(), done(day(0)), [], day(2), day(0), day(3))
    assert [states[d].kind for d in days(0, 3)] == ["success", "empty", "pending", "future"]


def test_calendar_rejects_a_reversed_range():
    with pytest.raises(ValueError):
        calendar(daily(), [], [], day(3), day(3), day(2))


def test_done_today_looks_only_at_todays_check_in():
    assert done_today(daily(), done(day(2)), day(2)) is True
    assert done_today(daily(), done(day(1)), day(2)) is False
    assert done_today(daily(), skipped(day(2)), day(2)) is False
    assert done_today(measurable("10"), done(day(2), value="9.999"), day(2)) is False


def test_week_progress_of_a_daily_habit_counts_due_days_of_the_week():
    checkins = done(day(7), day(9))
    assert week_progress(daily(), checkins, [(day(12), day(13))], day(9)) == (2, 5)


def test_summarize_agrees_with_the_single_functions():
    spec = three_a_week()
    checkins = done(day(0), day(2), day(4), day(7), day(8), day(9), day(14))
    today = day(15)
    progress = summarize(spec, checkins, [], today)
    assert progress == Progress(
        current_streak=2, best_streak=2, streak_unit="weeks",
        strength=strength(spec, checkins, [], today),
        completion_7=completion_rate(spec, checkins, [], today, 7),
        completion_30=completion_rate(spec, checkins, [], today, 30),
        completion_365=completion_rate(spec, checkins, [], today, 365),
        done_today=False, week_done=1, week_target=3)
    assert progress.strength_percent == strength_percent(progress.strength)


def test_habit_that_starts_after_today_has_no_progress_but_a_week_target():
    progress = summarize(daily(start=day(3)), [], [], day(1))  # starts Thursday, today Tuesday
    assert progress == Progress(0, 0, "days", 0.0, None, None, None, False, 0, 4)


# Invalid input


@pytest.mark.parametrize("overrides", [
    {"kind": "measurable"},
    {"kind": "measurable", "target_value": Decimal("0")},
    {"frequency": "weekdays", "weekdays": 0},
    {"frequency": "times_per_week", "times_per_week": 8},
    {"frequency": "monthly"},
    {"paused_ranges": [(day(3), day(2))]},
])
def test_invalid_habit_spec_is_rejected(overrides):
    with pytest.raises(ValueError):
        daily(**overrides)


def test_two_check_ins_on_one_day_are_rejected():
    with pytest.raises(ValueError, match="two check-ins"):
        summarize(daily(), done(day(1)) + skipped(day(1)), [], day(2))


def test_reversed_rest_period_is_rejected():
    with pytest.raises(ValueError):
        summarize(daily(), [], [(day(3), day(1))], day(4))
