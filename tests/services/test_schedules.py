"""Schedules: wall-clock reminders in IANA zones, across DST, and what people type."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from habitbot.services.schedules import (
    EVERY_DAY,
    fire_times,
    local_fire_date,
    next_fire,
    parse_local_time,
    parse_weekdays,
    weekday_list,
)

MON_WED_FRI = 0b0010101
SUNDAY = 0b1000000
TUESDAY = 0b0000010
FRIDAY = 0b0010000


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0,
          fold: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone), fold=fold)


def walls(fires: list[datetime], zone: str) -> list[datetime]:
    """Fire instants as naive wall-clock datetimes in `zone`."""
    return [fire.astimezone(ZoneInfo(zone)).replace(tzinfo=None) for fire in fires]


# --- Plain days and DST transitions -------------------------------------------------------

def test_moscow_has_no_dst_so_0830_is_0530_utc_all_year():
    fires = fire_times("Europe/Moscow", time(8, 30), EVERY_DAY,
                       local("Europe/Moscow", 2026, 1, 1), local("Europe/Moscow", 2027, 1, 1))
    assert len(fires) == 365
    assert {(f.hour, f.minute) for f in fires} == {(5, 30)}


def test_berlin_spring_forward_shifts_utc_by_an_hour_and_keeps_0830_local():
    fires = fire_times("Europe/Berlin", time(8, 30), EVERY_DAY,
                       local("Europe/Berlin", 2026, 3, 27), local("Europe/Berlin", 2026, 3, 31))
    assert fires == [utc(2026, 3, 27, 7, 30), utc(2026, 3, 28, 7, 30),
                     utc(2026, 3, 29, 6, 30), utc(2026, 3, 30, 6, 30)]
    assert {w.time() for w in walls(fires, "Europe/Berlin")} == {time(8, 30)}


def test_berlin_fall_back_shifts_utc_by_an_hour_and_keeps_0830_local():
    fires = fire_times("Europe/Berlin", time(8, 30), EVERY_DAY,
                       local("Europe/Berlin", 2026, 10, 23), local("Europe/Berlin", 2026, 10, 27))
    assert fires == [utc(2026, 10, 23, 6, 30), utc(2026, 10, 24, 6, 30),
                     utc(2026, 10, 25, 7, 30), utc(2026, 10, 26, 7, 30)]
    assert {w.time() for w in walls(fires, "Europe/Berlin")} == {time(8, 30)}


@pytest.mark.parametrize(("zone", "gap_day", "gap_fire", "next_day_fire"), [
    ("Europe/Berlin", date(2026, 3, 29), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)),
    ("America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)),
])
def test_reminder_in_the_spring_gap_fires_once_at_0330_then_at_0230_next_day(
        zone, gap_day, gap_fire, next_day_fire):
    day_before = datetime.combine(gap_day - timedelta(days=1), time(12), ZoneInfo(zone))
    fires = fire_times(zone, time(2, 30), EVERY_DAY, day_before, day_before + timedelta(days=2))
    assert fires == [gap_fire, next_day_fire]
    assert walls(fires, zone) == [datetime.combine(gap_day, time(3, 30)),
                                  datetime.combine(gap_day + timedelta(days=1), time(2, 30))]
    assert next_fire(zone, time(2, 30), EVERY_DAY, day_before) == gap_fire
    assert next_fire(zone, time(2, 30), EVERY_DAY, gap_fire) == next_day_fire


def test_new_york_0130_on_fall_back_day_fires_once_at_the_first_occurrence():
    zone = "America/New_York"
    fires = fire_times(zone, time(1, 30), EVERY_DAY,
                       local(zone, 2026, 10, 31, 12), local(zone, 2026, 11, 2, 12))
    first_occurrence, second_occurrence = utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)
    assert fires == [first_occurrence, utc(2026, 11, 2, 6, 30)]
    assert second_occurrence not in fires
    assert walls(fires, zone) == [datetime(2026, 11, 1, 1, 30), datetime(2026, 11, 2, 1, 30)]


def test_berlin_0230_on_fall_back_day_fires_once_at_the_first_occurrence():
    zone = "Europe/Berlin"
    fires = fire_times(zone, time(2, 30), EVERY_DAY,
                       local(zone, 2026, 10, 24, 12), local(zone, 2026, 10, 26, 12))
    assert fires == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


@pytest.mark.parametrize("after", [
    utc(2026, 11, 1, 5, 30),  # the first occurrence itself
    utc(2026, 11, 1, 5, 45),  # between the two occurrences
    local("America/New_York", 2026, 11, 1, 1, 15, fold=1),  # the second hour, as a local time
])
def test_after_the_first_overlap_occurrence_the_next_fire_is_the_next_day(after):
    assert next_fire("America/New_York", time(1, 30), EVERY_DAY, after) == \
        utc(2026, 11, 2, 6, 30)


def test_after_exactly_at_a_fire_time_returns_the_next_one():
    fire = utc(2026, 5, 4, 6, 30)
    assert next_fire("Europe/Berlin", time(8, 30), EVERY_DAY, fire) == utc(2026, 5, 5, 6, 30)
    just_before = fire - timedelta(microseconds=1)
    assert next_fire("Europe/Berlin", time(8, 30), EVERY_DAY, just_before) == fire


def test_after_in_another_zone_gives_the_same_utc_instant():
    in_tokyo = local("Asia/Tokyo", 2026, 5, 4, 15, 0)  # 06:00 UTC, 08:00 in Berlin
    fire = next_fire("Europe/Berlin", time(8, 30), EVERY_DAY, in_tokyo)
    assert fire == utc(2026, 5, 4, 6, 30)
    assert fire.tzinfo is UTC
    assert next_fire("Europe/Berlin", time(8, 30), EVERY_DAY,
                     in_tokyo.astimezone(UTC)) == fire


def test_after_late_in_the_evening_in_a_zone_ahead_of_utc_finds_the_next_local_morning():
    after = utc(2026, 5, 4, 22, 0)  # already 01:00 on May 5 in Moscow
    assert next_fire("Europe/Moscow", time(0, 30), EVERY_DAY, after) == utc(2026, 5, 5, 21, 30)
    assert next_fire("Europe/Moscow", time(8, 30), EVERY_DAY, after) == utc(2026, 5, 5, 5, 30)


# --- Weekday masks ------------------------------------------------------------------------

def test_mon_wed_fri_crosses_the_weekend_to_monday():
    zone = "Europe/Berlin"
    friday_after_the_reminder = local(zone, 2026, 1, 2, 9)
    assert next_fire(zone, time(8, 30), MON_WED_FRI, friday_after_the_reminder) == \
        local(zone, 2026, 1, 5, 8, 30)
    fires = fire_times(zone, time(8, 30), MON_WED_FRI, local(zone, 2026, 1, 1),
                       local(zone, 2026, 1, 12))
    assert [w.date() for w in walls(fires, zone)] == [
        date(2026, 1, 2), date(2026, 1, 5), date(2026, 1, 7), date(2026, 1, 9)]


def test_every_mask_fires_within_a_week_on_a_day_in_the_mask():
    zone = "America/New_York"
    for mask in range(1, 128):
        for day in range(7):
            after = local(zone, 2026, 3, 2 + day, 9)  # Mon 2026-03-02 … Sun 2026-03-08
            fire = next_fire(zone, time(8, 30), mask, after)
            assert timedelta(0) < fire - after <= timedelta(days=7)
            assert mask >> fire.astimezone(ZoneInfo(zone)).weekday() & 1


@pytest.mark.parametrize(("zone", "year", "month", "wall", "mask"), [
    ("Europe/Berlin", 2026, 3, time(2, 30), EVERY_DAY),
    ("Europe/Berlin", 2026, 10, time(2, 30), EVERY_DAY),
    ("Europe/Berlin", 2026, 3, time(8, 30), MON_WED_FRI),
    ("America/New_York", 2026, 3, time(2, 30), SUNDAY),
    ("America/New_York", 2026, 11, time(1, 30), EVERY_DAY),
    ("Australia/Lord_Howe", 2026, 4, time(1, 45), EVERY_DAY),
    ("Australia/Lord_Howe", 2026, 10, time(2, 15), EVERY_DAY),
    ("America/Santiago", 2026, 4, time(23, 30), EVERY_DAY),
    ("America/Santiago", 2026, 9, time(0, 30), EVERY_DAY),
    ("Asia/Kathmandu", 2026, 2, time(8, 30), MON_WED_FRI),
    ("Europe/Moscow", 2026, 3, time(8, 30), EVERY_DAY),
])
def test_fire_times_over_a_month_has_one_fire_per_matching_day(zone, year, month, wall, mask):
    tz = ZoneInfo(zone)
    days_in_month = calendar.monthrange(year, month)[1]
    expected_days = [date(year, month, d) for d in range(1, days_in_month + 1)
                     if mask >> date(year, month, d).weekday() & 1]
    start = datetime(year, month, 1, tzinfo=tz)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=tz)
    fires = fire_times(zone, wall, mask, start, end)
    assert len(fires) == len(expected_days)
    assert [local_fire_date(f, zone) for f in fires] == expected_days
    assert all(earlier < later for earlier, later in zip(fires, fires[1:], strict=False))
    assert fires == _chain_of_next_fires(zone, wall, mask, start, end)


def _chain_of_next_fires(zone: str, wall: time, mask: int, start: datetime,
                         end: datetime) -> list[datetime]:
    fires = []
    fire = next_fire(zone, wall, mask, start)
    while fire <= end:
        fires.append(fire)
        fire = next_fire(zone, wall, mask, fire)
        assert fire > fires[-1], "next_fire must move strictly forward"
    return fires


def test_fire_times_is_empty_when_the_window_holds_no_fire():
    after = local("Europe/Berlin", 2026, 5, 4, 9)
    assert fire_times("Europe/Berlin", time(8, 30), EVERY_DAY, after, after) == []
    assert fire_times("Europe/Berlin", time(8, 30), EVERY_DAY, after,
                      after - timedelta(days=3)) == []
    assert fire_times("Europe/Berlin", time(8, 30), EVERY_DAY, after,
                      after + timedelta(hours=23)) == []


def test_fire_times_includes_the_end_and_excludes_the_start():
    fire = utc(2026, 5, 4, 6, 30)
    assert fire_times("Europe/Berlin", time(8, 30), EVERY_DAY, fire - timedelta(days=1),
                      fire) == [fire]
    assert fire_times("Europe/Berlin", time(8, 30), EVERY_DAY, fire,
                      fire + timedelta(hours=23)) == []


# --- Unusual zones ------------------------------------------------------------------------

def test_lord_howe_half_hour_dst_shifts_utc_by_thirty_minutes():
    zone = "Australia/Lord_Howe"
    fires = fire_times(zone, time(8, 30), EVERY_DAY, local(zone, 2026, 10, 3),
                       local(zone, 2026, 10, 5))
    assert fires == [utc(2026, 10, 2, 22, 0), utc(2026, 10, 3, 21, 30)]
    assert {w.time() for w in walls(fires, zone)} == {time(8, 30)}


def test_lord_howe_gap_and_overlap_are_half_an_hour_wide():
    zone = "Australia/Lord_Howe"
    gap = fire_times(zone, time(2, 15), EVERY_DAY, local(zone, 2026, 10, 3, 12),
                     local(zone, 2026, 10, 4, 12))
    assert walls(gap, zone) == [datetime(2026, 10, 4, 2, 45)]
    overlap = fire_times(zone, time(1, 45), EVERY_DAY, local(zone, 2026, 4, 4, 12),
                         local(zone, 2026, 4, 5, 12))
    assert overlap == [utc(2026, 4, 4, 14, 45)]  # +11:00, the first of the two 01:45s


def test_kathmandu_quarter_hour_offset():
    assert next_fire("Asia/Kathmandu", time(8, 30), EVERY_DAY, utc(2026, 5, 4)) == \
        utc(2026, 5, 4, 2, 45)
    assert local_fire_date(utc(2026, 5, 4, 18, 30), "Asia/Kathmandu") == date(2026, 5, 5)


def test_apia_skipped_day_fires_each_remaining_day_once():
    zone = "Pacific/Apia"  # 2011-12-29 was followed by 2011-12-31
    fires = fire_times(zone, time(8, 30), EVERY_DAY, local(zone, 2011, 12, 28),
                       local(zone, 2012, 1, 3))
    assert [local_fire_date(f, zone) for f in fires] == [
        date(2011, 12, 28), date(2011, 12, 29), date(2011, 12, 31), date(2012, 1, 1),
        date(2012, 1, 2)]
    assert {w.time() for w in walls(fires, zone)} == {time(8, 30)}
    assert fires[2] - fires[1] == timedelta(days=1)


def test_apia_reminder_for_the_skipped_friday_fires_on_saturday_morning():
    zone = "Pacific/Apia"
    fire = next_fire(zone, time(8, 30), FRIDAY, local(zone, 2011, 12, 29, 12))
    assert walls([fire], zone) == [datetime(2011, 12, 31, 8, 30)]
    saturday_early = local(zone, 2011, 12, 31, 5)
    assert next_fire(zone, time(8, 30), FRIDAY, saturday_early) == fire


def test_leap_day_is_a_fire_day():
    zone = "Europe/Berlin"
    tuesday_before = local(zone, 2028, 2, 22, 9)
    fire = next_fire(zone, time(8, 30), TUESDAY, tuesday_before)
    assert local_fire_date(fire, zone) == date(2028, 2, 29)
    fires = fire_times(zone, time(8, 30), EVERY_DAY, local(zone, 2028, 2, 1),
                       local(zone, 2028, 3, 1))
    assert len(fires) == 29


# --- Validation and helpers ---------------------------------------------------------------

@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "Europe", "Europe/", "../etc/passwd",
                                  "europe/berlin", "x" * 300])
def test_unknown_zone_is_refused(zone):
    with pytest.raises(ValueError, match="unknown time zone"):
        next_fire(zone, time(8, 30), EVERY_DAY, utc(2026, 5, 4))
    with pytest.raises(ValueError, match="unknown time zone"):
        local_fire_date(utc(2026, 5, 4), zone)


@pytest.mark.parametrize("mask", [0, 128, -1])
def test_empty_or_oversized_weekday_mask_is_refused(mask):
    with pytest.raises(ValueError, match="weekday mask"):
        next_fire("Europe/Berlin", time(8, 30), mask, utc(2026, 5, 4))
    with pytest.raises(ValueError, match="weekday mask"):
        fire_times("Europe/Berlin", time(8, 30), mask, utc(2026, 5, 4), utc(2026, 6, 4))
    with pytest.raises(ValueError, match="weekday mask"):
        weekday_list(mask)


def test_naive_datetimes_and_zoned_local_times_are_refused():
    with pytest.raises(ValueError, match="after must be a timezone-aware"):
        next_fire("Europe/Berlin", time(8, 30), EVERY_DAY, datetime(2026, 5, 4))
    with pytest.raises(ValueError, match="end must be a timezone-aware"):
        fire_times("Europe/Berlin", time(8, 30), EVERY_DAY, utc(2026, 5, 4),
                   datetime(2026, 6, 4))
    with pytest.raises(ValueError, match="naive wall-clock time"):
        next_fire("Europe/Berlin", time(8, 30, tzinfo=UTC), EVERY_DAY, utc(2026, 5, 4))


def test_a_local_time_marked_as_the_second_occurrence_still_fires_at_the_first():
    fire = next_fire("America/New_York", time(1, 30, fold=1), EVERY_DAY,
                     utc(2026, 11, 1))
    assert fire == utc(2026, 11, 1, 5, 30)


@pytest.mark.parametrize(("mask", "days"), [
    (EVERY_DAY, [0, 1, 2, 3, 4, 5, 6]), (MON_WED_FRI, [0, 2, 4]), (SUNDAY, [6]), (1, [0]),
])
def test_weekday_list_lists_days_monday_first(mask, days):
    assert weekday_list(mask) == days


def test_local_fire_date_is_the_wall_clock_date_in_the_zone():
    late_evening_in_berlin = utc(2026, 7, 1, 21, 30)  # 23:30 CEST
    assert local_fire_date(late_evening_in_berlin, "Europe/Berlin") == date(2026, 7, 1)
    assert local_fire_date(late_evening_in_berlin, "Europe/Moscow") == date(2026, 7, 2)
    assert local_fire_date(late_evening_in_berlin, "America/New_York") == date(2026, 7, 1)
    with pytest.raises(ValueError, match="fire_at must be a timezone-aware"):
        local_fire_date(datetime(2026, 7, 1, 21, 30), "Europe/Berlin")


# --- Parsing times ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("8:30", time(8, 30)), ("08:30", time(8, 30)), ("8.30", time(8, 30)),
    ("0830", time(8, 30)), ("830", time(8, 30)), ("2000", time(20, 0)),
    ("8h30", time(8, 30)), ("8H30", time(8, 30)), ("8ч30", time(8, 30)),
    ("8 ч 30 мин", time(8, 30)), ("8h", time(8, 0)), ("8ч", time(8, 0)),
    ("8", time(8, 0)), ("08", time(8, 0)), ("0", time(0, 0)), ("20:00", time(20, 0)),
    ("23:59", time(23, 59)), ("0:00", time(0, 0)), ("  7:05 ", time(7, 5)),
    ("8:30 pm", time(20, 30)), ("8:30PM", time(20, 30)), ("8pm", time(20, 0)),
    ("8 am", time(8, 0)), ("8 a.m.", time(8, 0)), ("8 p.m.", time(20, 0)),
    ("12am", time(0, 0)), ("12 pm", time(12, 0)), ("12:15 am", time(0, 15)),
    ("8 утра", time(8, 0)), ("2 дня", time(14, 0)), ("12 дня", time(12, 0)),
    ("8 вечера", time(20, 0)), ("8:30 вечера", time(20, 30)), ("2 ночи", time(2, 0)),
    ("11 ночи", time(23, 0)), ("12 ночи", time(0, 0)),
    ("noon", time(12, 0)), ("Noon", time(12, 0)), ("полдень", time(12, 0)),
    ("midnight", time(0, 0)), ("Полночь", time(0, 0)), ("８:３０", time(8, 30)),
])
def test_parse_local_time_accepts_what_people_type(text, expected):
    assert parse_local_time(text) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("25:00", "hour must be between 0 and 23"),
    ("24", "24:00 is not a time of day"),
    ("24:00", "24:00 is not a time of day"),
    ("2400", "24:00 is not a time of day"),
    ("8:60", "minutes must be between 00 and 59"),
    ("8.5", "minutes need two digits"),
    ("8:5", "minutes need two digits"),
    ("-1", "not a time of day"),
    ("", "no time given"),
    ("   ", "no time given"),
    ("abc", "not a time of day"),
    ("eight", "not a time of day"),
    ("8:30 tomorrow", "not a time of day"),
    ("08:30:00", "not a time of day"),
    ("8:", "not a time of day"),
    ("pm", "not a time of day"),
    ("13pm", "with am/pm the hour must be between 1 and 12"),
    ("0 am", "with am/pm the hour must be between 1 and 12"),
    ("20:00 pm", "with am/pm the hour must be between 1 and 12"),
    ("8 дня", "is not a usual time"),
    ("12 вечера", "is not a usual time"),
    ("1" * 33, "too long"),
    ("8:30" + " " * 29, "too long"),
])
def test_parse_local_time_refuses_with_a_reason(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_local_time(text)


# --- Parsing weekdays ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "days"), [
    ("daily", [0, 1, 2, 3, 4, 5, 6]),
    ("every day", [0, 1, 2, 3, 4, 5, 6]),
    ("Every Day", [0, 1, 2, 3, 4, 5, 6]),
    ("каждый день", [0, 1, 2, 3, 4, 5, 6]),
    ("ежедневно", [0, 1, 2, 3, 4, 5, 6]),
    ("weekdays", [0, 1, 2, 3, 4]),
    ("будни", [0, 1, 2, 3, 4]),
    ("по будням", [0, 1, 2, 3, 4]),
    ("рабочие дни", [0, 1, 2, 3, 4]),
    ("weekends", [5, 6]),
    ("выходные", [5, 6]),
    ("по выходным", [5, 6]),
    ("mon wed fri", [0, 2, 4]),
    ("Mon,Wed,Fri", [0, 2, 4]),
    ("Monday, Wednesday and Friday", [0, 2, 4]),
    ("пн ср пт", [0, 2, 4]),
    ("Пн, Ср, Пт", [0, 2, 4]),
    ("по понедельникам и средам", [0, 2]),
    ("в среду", [2]),
    ("каждую пятницу", [4]),
    ("mon-fri", [0, 1, 2, 3, 4]),
    ("пн-пт", [0, 1, 2, 3, 4]),
    ("пн – пт", [0, 1, 2, 3, 4]),
    ("mon to fri", [0, 1, 2, 3, 4]),
    ("с пн по пт", [0, 1, 2, 3, 4]),
    ("fri-mon", [0, 4, 5, 6]),
    ("tue-thu, sun", [1, 2, 3, 6]),
    ("weekends, wed", [2, 5, 6]),
    ("sun sun", [6]),
])
def test_parse_weekdays_accepts_what_people_type(text, days):
    assert weekday_list(parse_weekdays(text)) == days


@pytest.mark.parametrize(("text", "reason"), [
    ("", "no days given"),
    ("   ", "no days given"),
    ("every", "no days given"),
    ("по", "no days given"),
    ("someday", "unknown day: 'someday'"),
    ("mon wed fry", "unknown day: 'fry'"),
    ("пн ср 5", "unknown day: '5'"),
    ("mon-", "needs a day after"),
    ("-fri", "needs a day before"),
    ("weekdays-sun", "needs a day before"),
    ("mon " * 30, "too long"),
])
def test_parse_weekdays_refuses_with_a_reason(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_weekdays(text)
