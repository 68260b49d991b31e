"""/premium and /balance through the bot: status in the user's timezone, the trial once,
buying from the balance (once per press, a shortfall explained with a top-up offered), the
balance history."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update

from habitbot.models import BalanceTransaction, Payment, User
from habitbot.services import billing
from habitbot.telegram.callbacks import CallbackCodec
from tests.conftest import TEST_TOKEN


@pytest.fixture
def member(chat_with, engine):
    """A user who has talked to the bot and finished onboarding in `zone`."""
    def make(telegram_id: int, language: str = "en", zone: str = "Europe/Berlin"):
        chat = chat_with(telegram_id, "Pat", language)
        chat.say("/help")
        with engine.begin() as conn:
            user_id = conn.execute(update(User).where(User.telegram_id == telegram_id).values(
                onboarded_at=User.created_at, timezone=zone).returning(User.id)).scalar_one()
        return chat, user_id
    return make


def top_up(engine, user_id: int, amount_minor: int) -> None:
    payment_id, _ = billing.create_payment(engine, user_id, "yookassa", "balance_topup",
                                           amount_minor, "RUB")
    billing.complete_payment(engine, payment_id, amount_minor, "RUB", f"yk-{payment_id}")


def purchases(engine, user_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(BalanceTransaction).where(
            BalanceTransaction.user_id == user_id,
            BalanceTransaction.kind == "purchase")).scalar_one()


def test_trial_then_the_free_limit_is_lifted(member):
    chat, _ = member(8001)
    screen = chat.say("/premium")
    assert "Free plan" in screen["text"] and "🎁 Start the 7-day trial" in chat.buttons(screen)
    assert "1 month: 199.00 ₽ or 150 ⭐" in screen["text"]
    assert "1 year: 1490.00 ₽ or 1100 ⭐" in screen["text"]
    assert chat.press("🎁 Start the 7-day trial")["text"].startswith("Premium trial until")
    shown = chat.message(screen["message_id"])
    assert "🎁 Premium trial until" in shown["text"]
    assert "🎁 Start the 7-day trial" not in chat.buttons(shown)
    for n in range(4):
        assert "New habit" in chat.say(f"/new Habit{n}")["text"]
    assert "several reminders" not in chat.say("/new Two 08:00 20:00")["text"]


def test_the_trial_is_given_once_even_from_an_old_screen(member, engine):
    chat, user_id = member(8003)
    screen = chat.say("/premium")
    trial_button = chat.message_with_button("🎁 Start the 7-day trial")
    data = next(b["callback_data"] for row in trial_button["reply_markup"]["inline_keyboard"]
                for b in row if b["text"] == "🎁 Start the 7-day trial")
    chat.press("🎁 Start the 7-day trial")
    first_end = billing.status(engine, user_id).ends_at
    answer = chat.press(message_id=screen["message_id"], data=data)
    assert answer["text"] == "The trial can be used once." and answer["show_alert"]
    assert billing.status(engine, user_id).ends_at == first_end


def test_status_shows_the_end_in_the_users_timezone(member, engine):
    chat, user_id = member(8004, zone="Asia/Tokyo")
    with engine.begin() as conn:
        conn.execute(update(User).where(User.id == user_id).values(
            tier="premium", premium_ends_at=datetime(2099, 3, 11, 20, 30, tzinfo=UTC)))
    assert "⭐ Premium until 12.03.2099 05:30." in chat.say("/premium")["text"]


def test_buying_a_month_from_the_balance(member, engine):
    chat, user_id = member(8002, "ru")
    top_up(engine, user_id, 30000)
    screen = chat.say("/premium")
    chat.press("⭐ Купить 1 месяц")
    assert "Как вы хотите оплатить?" in chat.message(screen["message_id"])["text"]
    answer = chat.press("С баланса (199.00 ₽)")
    assert answer["text"].startswith("Премиум до")
    assert "⭐ Премиум до" in chat.message(screen["message_id"])["text"]
    balance = chat.say("/balance")["text"]
    assert balance.startswith("Баланс: 101.00 ₽")
    assert "−199.00 ₽ · покупка → 101.00 ₽" in balance
    assert "+300.00 ₽ · пополнение → 300.00 ₽" in balance


def test_a_double_press_buys_once(member, engine):
    chat, user_id = member(8005)
    top_up(engine, user_id, 100000)
    chat.say("/premium")
    chat.press("⭐ Buy 1 month")
    plan = chat.message_with_button("From the balance (199.00 ₽)")
    data = next(b["callback_data"] for row in plan["reply_markup"]["inline_keyboard"]
                for b in row if b["text"] == "From the balance (199.00 ₽)")
    chat.press(message_id=plan["message_id"], data=data)
    second = chat.press(message_id=plan["message_id"], data=data)
    assert second["text"] == "This payment has already been started: see the message above."
    assert purchases(engine, user_id) == 1
    assert billing.balance(engine, user_id) == 100000 - 19900
    # A new screen is a new purchase.
    chat.press("⭐ Buy 1 month")
    chat.press("From the balance (199.00 ₽)")
    assert purchases(engine, user_id) == 2


def test_not_enough_on_the_balance_explains_and_offers_a_top_up(member, engine):
    chat, user_id = member(8006)
    top_up(engine, user_id, 5000)
    screen = chat.say("/premium")
    chat.press("⭐ Buy 1 year")
    answer = chat.press("From the balance (1490.00 ₽)")
    assert answer["text"] == "Not enough on the balance: 1440.00 ₽ more is needed."
    shown = chat.message(screen["message_id"])
    assert shown["text"].splitlines() == [
        "Not enough on the balance for 1 year: it costs 1490.00 ₽, you have 50.00 ₽.",
        "1440.00 ₽ more is needed. Top up the balance:"]
    assert chat.buttons(shown) == ["1440.00 ₽", "« Back"]
    assert purchases(engine, user_id) == 0 and billing.balance(engine, user_id) == 5000
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Payment).where(
            Payment.provider == "balance")).scalar_one() == 0
    chat.press("1440.00 ₽")
    assert "Top up the balance by 1440.00 ₽" in chat.message(screen["message_id"])["text"]


def test_small_shortfall_offers_the_exact_amount_and_the_usual_ones(member, engine):
    chat, user_id = member(8007)
    top_up(engine, user_id, 15050)
    chat.say("/premium")
    chat.press("⭐ Buy 1 month")
    chat.press("From the balance (199.00 ₽)")
    shown = chat.last()
    assert "48.50 ₽ more is needed" in shown["text"]
    assert chat.buttons(shown) == ["100.00 ₽", "300.00 ₽", "500.00 ₽", "1000.00 ₽", "« Back"]


def test_balance_history_is_dated_in_the_users_timezone(member, engine):
    chat, user_id = member(8008, zone="Europe/Moscow")
    assert chat.say("/balance")["text"] == "Balance: 0.00 ₽\nNo operations yet."
    top_up(engine, user_id, 25000)
    with engine.begin() as conn:
        conn.execute(update(BalanceTransaction).values(
            created_at=datetime(2026, 1, 31, 22, 30, tzinfo=UTC)))
    answer = chat.say("/balance")
    assert answer["text"].splitlines() == [
        "Balance: 250.00 ₽", "Recent operations:", "01.02.2026 +250.00 ₽ · top-up → 250.00 ₽"]
    assert chat.buttons(answer) == ["💳 Top up the balance", "⭐ Premium"]


def test_forged_and_foreign_buttons_change_nothing(member, engine):
    chat, user_id = member(8009)
    _, victim_id = member(8010)
    top_up(engine, user_id, 100000)
    screen = chat.say("/premium")
    codec = CallbackCodec(TEST_TOKEN)
    refused = "This button is no longer valid."
    cases = [codec.encode(8009, "pay", "decade", "balance", "n1"),
             codec.encode(8009, "pay", "month", "gold", "n2"),
             codec.encode(8009, "topamt", "5"),
             codec.encode(8009, "topay", "30000", "balance", "n3"),
             codec.encode(8010, "pay", "month", "balance", "n4"),  # signed for someone else
             "1|pay|month|balance|n5|forgedsg"]
    for data in cases:
        assert chat.press(message_id=screen["message_id"], data=data)["text"] == refused
    assert purchases(engine, user_id) == 0
    payment_id, _ = billing.create_payment(engine, victim_id, "yookassa", "balance_topup",
                                           30000, "RUB")
    foreign = codec.encode(8009, "chk", payment_id)
    assert chat.press(message_id=screen["message_id"], data=foreign)["text"] == refused
