"""Paying from /premium with YooKassa and CryptoBot through the bot and the provider
emulators: the "Pay" link and "Check payment", a provider that is down (nothing charged, the
user retries), one payment per press, and another user's payment."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from habitbot.bot.app import PollingBot
from habitbot.models import Payment, Subscription, User
from habitbot.runtime import Runtime, build_runtime
from habitbot.services import billing
from habitbot.telegram.callbacks import CallbackCodec
from tests.bot.conftest import Chat
from tests.conftest import TEST_TOKEN

PAY_URL_BUTTON = "💳 Pay 300.00 ₽"


@pytest.fixture
def runtime(bot_runtime) -> Runtime:
    return bot_runtime


@pytest.fixture
def payer(chat_with, engine):
    def make(telegram_id: int, language: str = "en"):
        chat = chat_with(telegram_id, "Payer", language)
        chat.say("/help")
        with engine.begin() as conn:
            user_id = conn.execute(update(User).where(User.telegram_id == telegram_id).values(
                onboarded_at=User.created_at).returning(User.id)).scalar_one()
        return chat, user_id
    return make


def url_button(message: dict, text: str) -> str:
    return next(b["url"] for row in message["reply_markup"]["inline_keyboard"] for b in row
                if b["text"] == text)


def payments(engine, *where) -> list:
    with engine.connect() as conn:
        return conn.execute(select(Payment).where(*where).order_by(Payment.id)).all()


def test_top_up_with_yookassa_then_check_payment(payer, engine, kassa_control):
    chat, user_id = payer(9101)
    screen = chat.say("/premium")
    chat.press("💳 Top up the balance")
    assert "How much would you like to top up?" in chat.message(screen["message_id"])["text"]
    chat.press("300.00 ₽")
    chat.press("💳 Bank card (YooKassa)")
    shown = chat.message(screen["message_id"])
    [row] = payments(engine)
    assert shown["text"].startswith(f"Payment #{row.id}: 300.00 ₽ with YooKassa.")
    assert chat.buttons(shown) == [PAY_URL_BUTTON, "🔄 Check payment", "« Back"]
    assert url_button(shown, PAY_URL_BUTTON) == row.confirmation_url
    assert (row.provider, row.payment_type, row.amount_minor, row.status) == (
        "yookassa", "balance_topup", 30000, "pending")

    early = chat.press("🔄 Check payment")
    assert early["show_alert"] and early["text"].startswith("The payment has not come through")
    assert billing.balance(engine, user_id) == 0

    kassa_control.pay(row.provider_payment_id)
    answer = chat.press("🔄 Check payment")
    assert answer["text"] == "Payment received. Thank you!"
    text = chat.message(screen["message_id"])["text"]
    assert text.startswith(f"✅ Payment #{row.id} received.") and "Your balance: 300.00 ₽" in text
    assert billing.balance(engine, user_id) == 30000
    # Pressing again (or the webhook arriving now) credits nothing more.
    chat.press(message_id=screen["message_id"],
               data=CallbackCodec(TEST_TOKEN).encode(9101, "chk", row.id))
    assert billing.balance(engine, user_id) == 30000


def test_buy_a_year_with_cryptobot(payer, engine, cryptopay_control):
    chat, user_id = payer(9102)
    screen = chat.say("/premium")
    chat.press("⭐ Buy 1 year")
    chat.press("🪙 CryptoBot")
    [row] = payments(engine)
    assert (row.provider, row.plan, row.amount_minor, row.currency) == (
        "cryptobot", "year", 149000, "RUB")
    assert "with CryptoBot" in chat.message(screen["message_id"])["text"]
    cryptopay_control.pay(int(row.provider_payment_id))
    chat.press("🔄 Check payment")
    assert "⭐ Premium until" in chat.message(screen["message_id"])["text"]
    assert billing.status(engine, user_id).tier == "premium"


def test_provider_down_charges_nothing_and_the_user_can_retry(payer, engine, kassa_control):
    chat, user_id = payer(9103)
    screen = chat.say("/premium")
    chat.press("⭐ Buy 1 month")
    kassa_control.add_fault("5xx", "create_payment", count=3)
    answer = chat.press("💳 Bank card (YooKassa)")
    assert answer["text"] == "The payment was not started. Nothing was charged."
    shown = chat.message(screen["message_id"])
    assert shown["text"] == ("YooKassa is not answering right now. Nothing was charged: please "
                             "try again in a minute.")
    assert chat.buttons(shown) == ["🔄 Try again", "« Back"]
    [failed] = payments(engine)
    assert failed.status == "failed" and billing.status(engine, user_id).tier == "free"

    chat.press("🔄 Try again")
    shown = chat.message(screen["message_id"])
    started = payments(engine, Payment.status == "pending")
    assert len(started) == 1 and f"Payment #{started[0].id}: 199.00 ₽" in shown["text"]


def test_unconfigured_provider_says_so(settings, emu_client, engine):
    """Without CRYPTOBOT_TOKEN (the plain test settings) the button explains; nothing is
    written."""
    rt = build_runtime("bot", "bot", settings=settings, configure_logging=False)
    bot = PollingBot(rt, poll_timeout=1)
    try:
        emu_client.add_user(9104, first_name="Nia", language_code="en")
        chat = Chat(emu_client, bot, 9104)
        chat.say("/premium")
        chat.press("⭐ Buy 1 month")
        chat.press("🪙 CryptoBot")
        assert chat.last()["text"] == ("Paying with CryptoBot is not available yet. Please "
                                       "choose another way.")
        assert chat.buttons(chat.last()) == ["« Back"]
    finally:
        bot.executor.shutdown()
        rt.close()
    assert payments(engine) == []


def test_a_double_press_starts_one_payment(payer, engine, kassa_control):
    chat, _ = payer(9105)
    chat.say("/premium")
    chat.press("💳 Top up the balance")
    chat.press("300.00 ₽")
    choice = chat.message_with_button("💳 Bank card (YooKassa)")
    data = next(b["callback_data"] for row in choice["reply_markup"]["inline_keyboard"]
                for b in row if b["text"] == "💳 Bank card (YooKassa)")
    chat.press(message_id=choice["message_id"], data=data)
    again = chat.press(message_id=choice["message_id"], data=data)
    assert again["text"] == "This payment has already been started: see the message above."
    assert len(payments(engine)) == 1 and len(kassa_control.payments()) == 1


def test_checking_another_users_payment_is_refused(payer, engine, kassa_control):
    owner, _ = payer(9106)
    intruder, _ = payer(9107)
    owner.say("/premium")
    owner.press("💳 Top up the balance")
    owner.press("300.00 ₽")
    owner.press("💳 Bank card (YooKassa)")
    [row] = payments(engine)
    kassa_control.pay(row.provider_payment_id)
    screen = intruder.say("/premium")
    forged = CallbackCodec(TEST_TOKEN).encode(9107, "chk", row.id)
    answer = intruder.press(message_id=screen["message_id"], data=forged)
    assert answer["text"] == "This button is no longer valid."
    assert payments(engine)[0].status == "pending"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Subscription)).scalar_one() == 0
