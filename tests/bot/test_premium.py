"""/premium and /balance through the bot: the trial once, buying from the balance."""

from __future__ import annotations

from sqlalchemy import select, update

from habitbot.models import User
from habitbot.services import billing


def _user_id(engine, telegram_id):
    with engine.begin() as conn:
        conn.execute(update(User).where(User.telegram_id == telegram_id).values(
            onboarded_at=User.created_at))
        return conn.execute(select(User.id).where(User.telegram_id == telegram_id)).scalar_one()


def test_trial_then_the_free_limit_is_lifted(chat_with, engine):
    chat = chat_with(8001, "Pat", "en")
    chat.say("/help")
    _user_id(engine, 8001)
    screen = chat.say("/premium")
    assert "Free plan" in screen["text"] and "🎁 Start the 7-day trial" in chat.buttons(screen)
    assert chat.press("🎁 Start the 7-day trial")["text"].startswith("Premium trial until")
    assert "🎁 Premium trial until" in chat.message(screen["message_id"])["text"]
    for n in range(4):
        assert "New habit" in chat.say(f"/new Habit{n}")["text"]
    assert "several reminders" not in chat.say("/new Two 08:00 20:00")["text"]


def test_buying_a_month_from_the_balance(chat_with, engine):
    chat = chat_with(8002, "Ola", "ru")
    chat.say("/help")
    user_id = _user_id(engine, 8002)
    screen = chat.say("/premium")
    answer = chat.press("1 месяц с баланса")
    assert answer["text"] == "На балансе не хватает 199.00 ₽." and answer["show_alert"]
    payment_id, _ = billing.create_payment(engine, user_id, "yookassa", "balance_topup",
                                           30000, "RUB")
    billing.complete_payment(engine, payment_id, 30000, "RUB")
    chat.press("1 месяц с баланса", message_id=screen["message_id"])
    assert "⭐ Премиум до" in chat.message(screen["message_id"])["text"]
    balance = chat.say("/balance")["text"]
    assert balance.startswith("Баланс: 101.00 ₽")
    assert "−199.00 ₽ · покупка → 101.00 ₽" in balance
    assert "+300.00 ₽ · пополнение → 300.00 ₽" in balance
