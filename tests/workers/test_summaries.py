"""Weekly summaries: found by zone and weekday, claimed once, rendered in the user's language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, update

from habitbot.models import Habit, HabitCheckin, User
from habitbot.services import habits as svc
from habitbot.services import summaries
from habitbot.services.habits import HabitDraft
from workers import summaries as jobs

# 2026-11-29 is a Sunday; 16:30 UTC is 19:30 in Moscow and 17:30 in Berlin.
SUNDAY_EVENING_MSK = datetime(2026, 11, 29, 16, 30, tzinfo=UTC)


def _user(engine, telegram_id, zone, weekday=6, language="ru"):
    with engine.begin() as conn:
        return conn.execute(insert(User).values(
            telegram_id=telegram_id, timezone=zone, language=language,
            weekly_summary_weekday=weekday, onboarded_at=SUNDAY_EVENING_MSK)
            .returning(User.id)).scalar_one()


def test_due_users_are_claimed_once_by_zone_and_weekday(engine):
    moscow = _user(engine, 1, "Europe/Moscow")
    _user(engine, 2, "Europe/Berlin")            # 17:30 there: not yet
    _user(engine, 3, "Europe/Moscow", weekday=0)  # wants Mondays
    claimed = summaries.claim_due(engine, SUNDAY_EVENING_MSK)
    assert [t.user_id for t in claimed] == [moscow]
    assert claimed[0].local_day.isoformat() == "2026-11-29"
    assert summaries.claim_due(engine, SUNDAY_EVENING_MSK + timedelta(minutes=15)) == []


def test_summary_counts_the_week_and_is_sent_in_russian(runtime, engine, emu_client):
    emu_client.add_user(10, first_name="Ира", language_code="ru")
    user_id = _user(engine, 10, "Europe/Moscow")
    habit = svc.create_habit(engine, user_id, HabitDraft("Чтение")).id
    with engine.begin() as conn:
        conn.execute(update(Habit).values(created_at=SUNDAY_EVENING_MSK - timedelta(days=10)))
        for ago in (0, 1, 2, 4, 5):
            conn.execute(insert(HabitCheckin).values(
                habit_id=habit, user_id=user_id, status="done",
                local_date=SUNDAY_EVENING_MSK.date() - timedelta(days=ago)))
    lines = summaries.week_lines(engine, user_id, SUNDAY_EVENING_MSK.date())
    assert [(line.name, line.done, line.due) for line in lines] == [("Чтение", 5, 7)]
    assert jobs.send_summaries([(user_id, 10, "ru", "2026-11-29")]) == 1
    text = emu_client.messages(10, sender="bot")[-1]["text"]
    assert text.startswith("📊 Ваша неделя")
    assert "▫️ Чтение — 5/7 · 🔥 3 дня" in text and "Всего: 71% от запланированного." in text


def test_a_user_whose_day_starts_after_the_summary_hour_gets_the_week_of_their_own_day(engine):
    # 19:30 on Sunday in Moscow: for a day starting at 20:00 it is still Saturday the 28th.
    night_owl = _user(engine, 4, "Europe/Moscow")
    usual = _user(engine, 5, "Europe/Moscow")
    with engine.begin() as conn:
        conn.execute(update(User).where(User.id == night_owl).values(day_start_hour=20))
        conn.execute(update(User).where(User.id == usual).values(day_start_hour=11))

    claimed = {t.user_id: t.local_day.isoformat()
               for t in summaries.claim_due(engine, SUNDAY_EVENING_MSK)}

    assert claimed == {night_owl: "2026-11-28", usual: "2026-11-29"}
    assert summaries.claim_due(engine, SUNDAY_EVENING_MSK + timedelta(minutes=15)) == []
