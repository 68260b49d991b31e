"""54-FZ receipts in /premium: a YooKassa payer without an e-mail is asked for one (a bad one
is refused, /cancel leaves), the payment they were heading to then starts once with its
receipt; the address is shown to its owner and can be changed; with receipts off nothing of
this shows, and a shop that requires receipts refuses the payment visibly."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

from habitbot.config import Settings, load_settings
from habitbot.models import Payment, User
from habitbot.payments import http
from habitbot.runtime import Runtime, build_runtime
from tests.payments.support import payment_env

ASKED = ("A receipt for every card payment is sent by e-mail, as Russian law requires. Send "
         "the address for receipts, for example name@example.com, or /cancel.")
REFUSED = ("That does not look like an e-mail address. Send it like name@example.com, or "
           "/cancel.")
EMAIL_BUTTON = "✉️ E-mail for receipts"


@pytest.fixture
def receipts() -> str:
    """YOOKASSA_RECEIPTS of the bot under test (a test parametrizes it to "off")."""
    return "on"


@pytest.fixture
def receipt_settings(database_url, redis_url, emulator, redis_conn, kassa, cryptopay,
                     receipts) -> Settings:
    return load_settings(payment_env(database_url, redis_url, emulator.url, kassa, cryptopay,
                                     YOOKASSA_RECEIPTS=receipts))


@pytest.fixture
def runtime(receipt_settings, monkeypatch) -> Iterator[Runtime]:
    monkeypatch.setattr(http, "READ_TIMEOUT", 0.5)
    rt = build_runtime("bot", "bot", settings=receipt_settings, configure_logging=False)
    yield rt
    rt.close()


@pytest.fixture
def payer(chat_with, engine):
    def make(telegram_id: int, email: str | None = None):
        chat = chat_with(telegram_id, "Pat", "en")
        chat.say("/help")
        with engine.begin() as conn:
            user_id = conn.execute(update(User).where(User.telegram_id == telegram_id).values(
                onboarded_at=User.created_at, receipt_email=email).returning(User.id)
            ).scalar_one()
        return chat, user_id
    return make


def payments(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(Payment).order_by(Payment.id)).all()


def stored_email(engine, user_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(User.receipt_email).where(User.id == user_id)).scalar()


def callback_data(message: dict, text: str) -> str:
    return next(b["callback_data"] for row in message["reply_markup"]["inline_keyboard"]
                for b in row if b["text"] == text)


def test_no_email_asks_refuses_a_bad_one_then_starts_the_top_up_once(payer, engine,
                                                                     kassa_control, caplog):
    caplog.set_level(logging.DEBUG)
    chat, user_id = payer(9301)
    screen = chat.say("/premium")
    assert "E-mail for receipts: not set." in screen["text"]
    chat.press("💳 Top up the balance")
    chat.press("300.00 ₽")
    choice = chat.message_with_button("💳 Bank card (YooKassa)")
    pressed = callback_data(choice, "💳 Bank card (YooKassa)")
    chat.press("💳 Bank card (YooKassa)")
    asked = chat.message(screen["message_id"])
    assert asked["text"] == ASKED and chat.buttons(asked) == ["« Back"]
    assert payments(engine) == [] and kassa_control.payments() == []

    assert chat.say("pat at example dot com")["text"] == REFUSED
    assert chat.say("x" * 250 + "@example.com")["text"] == REFUSED
    assert stored_email(engine, user_id) is None and payments(engine) == []

    shown = chat.say("Pat@Example.com")
    [row] = payments(engine)
    assert shown["text"].startswith("✅ Receipts will be sent to Pat@example.com.\n\n"
                                    f"Payment #{row.id}: 300.00 ₽ with YooKassa.")
    assert chat.buttons(shown) == ["💳 Pay 300.00 ₽", "🔄 Check payment", "« Back"]
    assert (row.payment_type, row.amount_minor, row.status) == ("balance_topup", 30000,
                                                                "pending")
    assert stored_email(engine, user_id) == "Pat@example.com"
    sent = kassa_control.receipt(row.provider_payment_id)
    assert sent["customer"] == {"email": "Pat@example.com"}
    assert sent["items"][0]["payment_mode"] == "advance"

    # The button pressed before the question still starts nothing more.
    again = chat.press(message_id=choice["message_id"], data=pressed)
    assert again["text"] == "This payment has already been started: see the message above."
    assert len(payments(engine)) == 1 and len(kassa_control.payments()) == 1
    assert "I did not understand" in chat.say("another@example.com")["text"]
    assert not [r for r in caplog.records if "xample.com" in r.getMessage() + repr(vars(r))]


def test_a_plan_after_the_question_is_bought_with_a_service_receipt(payer, engine,
                                                                     kassa_control):
    chat, _ = payer(9302)
    chat.say("/premium")
    chat.press("⭐ Buy 1 month")
    chat.press("💳 Bank card (YooKassa)")
    shown = chat.say("pat@example.com")
    [row] = payments(engine)
    assert f"Payment #{row.id}: 199.00 ₽ with YooKassa." in shown["text"]
    [item] = kassa_control.receipt(row.provider_payment_id)["items"]
    assert (item["payment_mode"], item["payment_subject"]) == ("full_payment", "service")
    assert item["amount"] == {"value": "199.00", "currency": "RUB"}


def test_a_user_with_an_email_is_not_asked(payer, engine, kassa_control):
    chat, _ = payer(9303, email="pat@example.com")
    screen = chat.say("/premium")
    assert "Receipts are sent to pat@example.com." in screen["text"]
    chat.press("⭐ Buy 1 year")
    chat.press("💳 Bank card (YooKassa)")
    [row] = payments(engine)
    assert chat.message(screen["message_id"])["text"].startswith(
        f"Payment #{row.id}: 1490.00 ₽ with YooKassa.")
    assert kassa_control.receipt(row.provider_payment_id)["customer"] == {
        "email": "pat@example.com"}


def test_cancel_leaves_the_question_without_paying(payer, engine, kassa_control):
    chat, user_id = payer(9304)
    chat.say("/premium")
    chat.press("⭐ Buy 1 month")
    chat.press("💳 Bank card (YooKassa)")
    assert chat.say("/cancel")["text"].startswith("Cancelled.")
    assert "I did not understand" in chat.say("pat@example.com")["text"]
    assert stored_email(engine, user_id) is None
    assert payments(engine) == [] and kassa_control.payments() == []


def test_back_from_the_question_returns_to_premium(payer, engine):
    chat, user_id = payer(9305)
    screen = chat.say("/premium")
    chat.press("⭐ Buy 1 month")
    chat.press("💳 Bank card (YooKassa)")
    chat.press("« Back")
    assert "Premium: up to 200 habits" in chat.message(screen["message_id"])["text"]
    assert "I did not understand" in chat.say("pat@example.com")["text"]
    assert stored_email(engine, user_id) is None and payments(engine) == []


def test_the_email_is_changed_from_premium(payer, engine):
    chat, user_id = payer(9306, email="old@example.com")
    screen = chat.say("/premium")
    assert EMAIL_BUTTON in chat.buttons(screen)
    chat.press(EMAIL_BUTTON)
    assert chat.message(screen["message_id"])["text"] == ASKED
    shown = chat.say("new@example.org")
    assert shown["text"].startswith("✅ Receipts will be sent to new@example.org.\n\n")
    assert "Receipts are sent to new@example.org." in shown["text"]
    assert "old@example.com" not in shown["text"]
    assert stored_email(engine, user_id) == "new@example.org" and payments(engine) == []


def test_cryptobot_needs_no_email(payer, engine):
    chat, user_id = payer(9307)
    chat.say("/premium")
    chat.press("⭐ Buy 1 month")
    chat.press("🪙 CryptoBot")
    [row] = payments(engine)
    assert "with CryptoBot" in chat.last()["text"] and row.provider == "cryptobot"
    assert stored_email(engine, user_id) is None


@pytest.mark.parametrize("receipts", ["off"])
def test_receipts_off_shows_nothing_and_sends_no_receipt(payer, engine, kassa_control):
    chat, _ = payer(9308)
    screen = chat.say("/premium")
    assert "receipt" not in screen["text"].lower()
    assert EMAIL_BUTTON not in chat.buttons(screen)
    chat.press("⭐ Buy 1 month")
    chat.press("💳 Bank card (YooKassa)")
    [row] = payments(engine)
    assert chat.message(screen["message_id"])["text"].startswith(f"Payment #{row.id}")
    assert kassa_control.receipt(row.provider_payment_id) is None


@pytest.mark.parametrize("receipts", ["off"])
def test_a_shop_requiring_receipts_refuses_and_the_user_sees_it(payer, engine,
                                                                kassa_control):
    kassa_control.require_receipts()
    chat, _ = payer(9309)
    screen = chat.say("/premium")
    chat.press("⭐ Buy 1 month")
    answer = chat.press("💳 Bank card (YooKassa)")
    assert answer["text"] == "The payment was not started. Nothing was charged."
    shown = chat.message(screen["message_id"])
    assert shown["text"] == ("YooKassa did not accept the payment. Nothing was charged: "
                             "please try again later or choose another way.")
    assert chat.buttons(shown) == ["🔄 Try again", "« Back"]
    [row] = payments(engine)
    assert row.status == "failed" and "Receipt is missing or illegal" in row.failure_reason
