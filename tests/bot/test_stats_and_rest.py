"""/stats numbers match a hand calculation; rest mode keeps streaks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, update

from habitbot.models import Habit, HabitCheckin, RestPeriod, User


def _onboard(chat, engine):
    chat.say("/help")
    with engine.begin() as conn:
        conn.execute(update(User).where(User.telegram_id == chat.user_id).values(
            onboarded_at=User.created_at, timezone="UTC"))
    return chat


def _backdate(engine, name: str, days: int) -> int:
    with engine.begin() as conn:
        return conn.execute(update(Habit).where(Habit.name == name).values(
            created_at=datetime.now(UTC) - timedelta(days=days)).returning(Habit.id)).scalar_one()


def _done(engine, user_tg: int, habit_id: int, days_ago: list[int], status: str = "done"):
    today = datetime.now(UTC).date()
    with engine.begin() as conn:
        uid = conn.execute(select(User.id).where(User.telegram_id == user_tg)).scalar_one()
        for ago in days_ago:
            conn.execute(insert(HabitCheckin).values(
                habit_id=habit_id, user_id=uid, local_date=today - timedelta(days=ago),
                status=status))


def test_stats_show_streaks_strength_and_rates(chat_with, engine):
    chat = _onboard(chat_with(6001, "Ann", "en"), engine)
    chat.say("/new Read")
    habit = _backdate(engine, "Read", 9)
    # done on days 9..5 and 3..1 ago; day 4 missed; today not yet
    _done(engine, 6001, habit, [9, 8, 7, 6, 5, 3, 2, 1])
    text = chat.say("/stats")["text"]
    assert "🔥 Streak: 3 days (best: 5 days)" in text
    # The 7-day window is today and the 6 days before; an unfinished today is left out:
    # 5 done of 6 (day 4 missed) = 83%. Since the start 9 days ago: 8 of 9 = 89%.
    assert "📈 Done: 83% in 7 days · 89% in 30 · 89% in 365" in text
    assert "💪 Strength:" in text


def test_rest_week_keeps_the_streak(chat_with, engine):
    chat = _onboard(chat_with(6002, "Bo", "ru"), engine)
    chat.say("/new Бег")
    habit = _backdate(engine, "Бег", 12)
    _done(engine, 6002, habit, [12, 11, 10, 2, 1])
    today = datetime.now(UTC).date()
    with engine.begin() as conn:
        uid = conn.execute(select(User.id).where(User.telegram_id == 6002)).scalar_one()
        conn.execute(insert(RestPeriod).values(user_id=uid, starts_on=today - timedelta(days=9),
                                               ends_on=today - timedelta(days=3)))
    assert "🔥 Серия: 5 дней" in chat.say("/stats")["text"]


def test_rest_mode_from_settings(chat_with, engine):
    chat = _onboard(chat_with(6003, "Cy", "en"), engine)
    menu = chat.say("/settings")
    chat.press("🏖 Rest")
    assert chat.press("7 days")["text"] == "Enjoy your rest! Your streaks are kept."
    assert "🏖 Rest:" in chat.message(menu["message_id"])["text"]
    with engine.connect() as conn:
        [period] = conn.execute(select(RestPeriod.starts_on, RestPeriod.ends_on)).all()
    assert (period.ends_on - period.starts_on).days == 6
    chat.press("🏖 Rest")
    chat.press("End the rest now")
    assert "🏖 Rest:" not in chat.message(menu["message_id"])["text"]



def test_calendar_button_sends_a_heatmap_picture(chat_with, engine):
    chat = _onboard(chat_with(6004, "Di", "ru"), engine)
    chat.say("/new Чтение")
    habit = _backdate(engine, "Чтение", 40)
    _done(engine, 6004, habit, list(range(1, 40, 2)))
    chat.say("/stats")
    chat.press("🗓 Календарь: Чтение")
    photo = chat.last()
    assert photo["kind"] == "photo"
    assert "🔥 Серия:" in photo["text"]
