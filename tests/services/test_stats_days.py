"""Statistics count from the user's own day a habit was made: their zone and day-start hour."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import insert

from habitbot.models import Habit, HabitCheckin, User
from habitbot.services.stats import user_stats


def _user(engine, zone: str, day_start_hour: int) -> int:
    with engine.begin() as conn:
        return conn.execute(insert(User).values(
            telegram_id=9101, timezone=zone, day_start_hour=day_start_hour)
            .returning(User.id)).scalar_one()


def test_a_habit_made_before_the_day_start_hour_starts_on_the_day_before(engine):
    uid = _user(engine, "UTC", 4)
    made = datetime(2026, 1, 14, 1, 0, tzinfo=UTC)  # 01:00: still the user's 13 January
    with engine.begin() as conn:
        hid = conn.execute(insert(Habit).values(user_id=uid, name="Night", created_at=made,
                                                paused_at=None).returning(Habit.id)).scalar_one()
        conn.execute(insert(HabitCheckin).values(habit_id=hid, user_id=uid,
                                                 local_date=date(2026, 1, 13), status="done"))
    [item] = user_stats(engine, uid, date(2026, 1, 14))
    assert item.spec.start == date(2026, 1, 13)
    assert item.summary.current_streak == 1


def test_a_habit_made_late_at_utc_plus_14_starts_on_the_local_day(engine):
    uid = _user(engine, "Pacific/Kiritimati", 0)
    made = datetime(2026, 3, 9, 10, 10, tzinfo=UTC)  # 00:10 on 10 March in Kiritimati
    with engine.begin() as conn:
        conn.execute(insert(Habit).values(user_id=uid, name="Late", created_at=made))
    [item] = user_stats(engine, uid, date(2026, 3, 10))
    assert item.spec.start == date(2026, 3, 10)
