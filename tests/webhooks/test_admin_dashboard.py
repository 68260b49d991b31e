"""The dashboard's figures (habitbot.services.dashboard): settled buckets counted once per cache
period, recent ones always; the send rate from the sender's shared counters."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
import redis
from sqlalchemy.orm import Session

from habitbot.models import Habit, HabitCheckin, HabitSchedule, ReminderDelivery, User
from habitbot.runtime import build_runtime
from habitbot.services import dashboard
from habitbot.telegram.sender import METRICS_KEY

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)


@pytest.fixture
def habit(engine) -> dict[str, int]:
    with Session(engine) as session, session.begin():
        user = User(telegram_id=7001)
        session.add(user)
        session.flush()
        read = Habit(user_id=user.id, name="Read", created_at=NOW - timedelta(days=5))
        session.add(read)
        session.flush()
        schedule = HabitSchedule(habit_id=read.id, local_time=time(9))
        session.add(schedule)
        session.flush()
        return {"user": user.id, "habit": read.id, "schedule": schedule.id}


def _delivery(engine, ids: dict[str, int], at: datetime, status: str) -> None:
    with Session(engine) as session, session.begin():
        session.add(ReminderDelivery(schedule_id=ids["schedule"], habit_id=ids["habit"],
                                     user_id=ids["user"], fire_at=at, status=status,
                                     created_at=at))


def _checkin(engine, ids: dict[str, int], days_ago: int, status: str = "done") -> None:
    with Session(engine) as session, session.begin():
        session.add(HabitCheckin(habit_id=ids["habit"], user_id=ids["user"],
                                 local_date=NOW.date() - timedelta(days=days_ago),
                                 status=status))


def test_reminders_per_hour_count_settled_hours_once_per_cache_period(engine, redis_conn,
                                                                      habit):
    _delivery(engine, habit, NOW - timedelta(hours=10), "sent")
    _delivery(engine, habit, NOW - timedelta(minutes=20), "failed")
    first = dashboard.reminders_hourly(engine, redis_conn, NOW)
    assert len(first.labels) == 48 and first.labels[-1] == "03-10 12:00"
    assert first.datasets["sent"][-11] == 1 and first.datasets["failed"][-1] == 1
    # A late row in a settled hour waits for the cache to expire; the current hours are live.
    _delivery(engine, habit, NOW - timedelta(hours=10, minutes=-1), "sent")
    _delivery(engine, habit, NOW - timedelta(minutes=10), "missed")
    second = dashboard.reminders_hourly(engine, redis_conn, NOW)
    assert second.datasets["sent"][-11] == 1 and second.datasets["missed"][-1] == 1
    assert 0 < redis_conn.ttl(f"{dashboard.CACHE_PREFIX}reminders_hourly:2026-03-10T02") \
        <= dashboard.SETTLED_TTL
    uncached = dashboard.reminders_hourly(engine, None, NOW)
    assert uncached.datasets["sent"][-11] == 2
    redis_conn.flushdb()
    assert dashboard.reminders_hourly(engine, redis_conn, NOW).datasets["sent"][-11] == 2


def test_reminders_outside_the_48_hours_are_not_counted(engine, redis_conn, habit):
    _delivery(engine, habit, NOW - timedelta(hours=48, minutes=31), "sent")
    _delivery(engine, habit, NOW + timedelta(hours=1), "sent")
    series = dashboard.reminders_hourly(engine, redis_conn, NOW)
    assert sum(series.datasets["sent"]) == 0


def test_daily_activity_keeps_the_last_two_days_live(engine, redis_conn, habit):
    _checkin(engine, habit, 10)
    first = dashboard.daily_activity(engine, redis_conn, NOW.date())
    assert first.labels[-1] == "03-10" and len(first.labels) == 30
    assert first.datasets["check-ins done"][-11] == 1
    assert first.datasets["new habits"][-6] == 1
    _checkin(engine, habit, 1)  # "check in for yesterday" still lands after midnight
    _checkin(engine, habit, 0, "skipped")
    second = dashboard.daily_activity(engine, redis_conn, NOW.date())
    assert second.datasets["check-ins done"][-2] == 1 and second.datasets["skipped"][-1] == 1
    assert sum(second.datasets["check-ins done"]) == 2


def test_figures_without_redis_come_from_the_database(engine, redis_url, redis_proxy, habit):
    conn = redis.Redis.from_url(redis_proxy.url_for(redis_url), socket_timeout=1,
                                socket_connect_timeout=1)
    redis_proxy.set_mode("refuse")
    try:
        assert dashboard.figures(engine, conn)["users"] == 1
        series = dashboard.daily_activity(engine, conn, NOW.date())
        assert series.datasets["new habits"][-6] == 1
    finally:
        conn.close()


def test_send_rate_is_measured_between_samples(settings, redis_conn, emu_client):
    runtime = build_runtime("web", "web", settings=settings, configure_logging=False)
    try:
        emu_client.add_user(9001, first_name="Rate")
        t0 = 1_800_000_000.0
        before = dashboard.sender_activity(redis_conn, 30.0, now=t0)
        assert before.current_rate is None and before.series.labels == []
        for n in range(4):
            runtime.sender.send_message(9001, f"m{n}")
        after = dashboard.sender_activity(redis_conn, 30.0, now=t0 + 10)
        assert after.current_rate == 0.4 and after.limit == 30.0
        assert after.series.datasets["limit"] == [30.0]
        assert after.totals["interactive"]["sent"] == 4
        emu_client.add_fault("429", methods=["sendMessage"], count=1, retry_after=1)
        runtime.sender.send_message(9001, "after a 429")
        limited = dashboard.sender_activity(redis_conn, 30.0, now=t0 + 20)
        assert limited.series.datasets["429s"] == [0, 1]
        assert limited.series.datasets["messages/s"] == [0.4, 0.1]
        # The same slot is sampled once, whoever views the page.
        again = dashboard.sender_activity(redis_conn, 30.0, now=t0 + 21)
        assert len(again.series.labels) == 2
        redis_conn.delete(METRICS_KEY)  # counters reset: a rate is never negative
        reset = dashboard.sender_activity(redis_conn, 30.0, now=t0 + 30)
        assert reset.series.datasets["messages/s"][-1] == 0.0
        # Samples older than the window are dropped.
        late = dashboard.sender_activity(redis_conn, 30.0, now=t0 + 30 + dashboard.SAMPLE_WINDOW)
        assert late.series.labels == []
    finally:
        runtime.close()
