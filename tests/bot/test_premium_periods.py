"""Buying premium during the trial through the bot, every way there is to pay: /premium says
before paying when the new period ends (in the user's zone and language), the paid period starts
when the trial ends, and a press on the premium card that changes nothing edits nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from habitbot.models import Payment, User
from habitbot.runtime import Runtime
from habitbot.services import billing
from habitbot.telegram.callbacks import CallbackCodec
from tests.bot.test_premium_stars import checkout, order_month
from tests.conftest import TEST_TOKEN
from tests.payments.support import paid_top_up

ZONE = "Asia/Tokyo"


@pytest.fixture
def runtime(bot_runtime) -> Runtime:
    return bot_runtime


@pytest.fixture
def on_trial(chat_with, engine):
    """A user in Tokyo who has started the trial from /premium; (chat, user id, trial end)."""
    def make(telegram_id: int):
        chat = chat_with(telegram_id, "Tomo", "en")
        chat.say("/help")
        with engine.begin() as conn:
            user_id = conn.execute(update(User).where(User.telegram_id == telegram_id).values(
                onboarded_at=User.created_at, timezone=ZONE).returning(User.id)).scalar_one()
        chat.say("/premium")
        chat.press("🎁 Start the 7-day trial")
        with engine.connect() as conn:
            trial_end = conn.execute(select(User.trial_ends_at).where(
                User.id == user_id)).scalar_one()
        return chat, user_id, trial_end
    return make


def shown(instant: datetime) -> str:
    return instant.astimezone(ZoneInfo(ZONE)).strftime("%d.%m.%Y %H:%M")


def premium_until(engine, user_id: int) -> datetime:
    with engine.connect() as conn:
        return conn.execute(select(User.premium_ends_at).where(User.id == user_id)).scalar_one()


def last_payment(engine) -> Payment:
    with engine.connect() as conn:
        return conn.execute(select(Payment).order_by(Payment.id.desc()).limit(1)).one()


def edits(emu_client) -> int:
    return emu_client.stats()["requests"].get("editMessageText", 0)


def test_the_plan_screen_says_when_the_paid_period_starts_and_ends(on_trial, engine):
    chat, user_id, trial_end = on_trial(9301)
    screen = chat.say("/premium")
    chat.press("⭐ Buy 1 month")
    lines = chat.message(screen["message_id"])["text"].splitlines()
    assert lines[1:3] == [
        f"After paying, premium lasts until {shown(trial_end + timedelta(days=30))}.",
        f"The days you already have are kept: the paid period starts on {shown(trial_end)}."]
    paid_top_up(engine, user_id, 20000)
    answer = chat.press("From the balance (199.00 ₽)")
    until = trial_end + timedelta(days=30)
    assert premium_until(engine, user_id) == until
    assert answer["text"] == f"Premium until {shown(until)}. Thank you!"
    assert f"⭐ Premium until {shown(until)}." in chat.message(screen["message_id"])["text"]


def test_the_plan_screen_in_russian_for_a_free_user(chat_with, engine):
    chat = chat_with(9302, "Оля", "ru")
    chat.say("/help")
    with engine.begin() as conn:
        conn.execute(update(User).where(User.telegram_id == 9302).values(
            onboarded_at=User.created_at, timezone=ZONE))
    screen = chat.say("/premium")
    before = datetime.now(UTC)
    chat.press("⭐ Купить 1 год")
    after = datetime.now(UTC)
    lines = chat.message(screen["message_id"])["text"].splitlines()
    prefix = "После оплаты премиум будет действовать до "
    assert lines[1].startswith(prefix) and lines[1].endswith(".")
    assert lines[2].startswith("Ваш баланс")  # nothing to keep: no line about kept days
    ends = datetime.strptime(lines[1][len(prefix):-1], "%d.%m.%Y %H:%M").replace(
        tzinfo=ZoneInfo(ZONE))
    year = timedelta(days=365)
    assert before + year - timedelta(minutes=1) <= ends <= after + year


def test_a_month_paid_with_yookassa_during_the_trial(on_trial, engine, kassa_control,
                                                     emu_client):
    chat, user_id, trial_end = on_trial(9303)
    screen = chat.say("/premium")
    chat.press("⭐ Buy 1 month")
    chat.press("💳 Bank card (YooKassa)")
    row = last_payment(engine)
    kassa_control.pay(row.provider_payment_id)
    assert chat.press("🔄 Check payment")["text"] == "Payment received. Thank you!"
    until = trial_end + timedelta(days=30)
    assert premium_until(engine, user_id) == until
    text = chat.message(screen["message_id"])["text"]
    assert f"⭐ Premium until {shown(until)}." in text
    # Pressing "Check payment" again shows the same card: no edit is sent.
    data = CallbackCodec(TEST_TOKEN).encode(9303, "chk", row.id)
    before = edits(emu_client)
    chat.press(message_id=screen["message_id"], data=data)
    assert edits(emu_client) == before
    assert chat.message(screen["message_id"])["text"] == text
    assert premium_until(engine, user_id) == until


def test_a_year_paid_with_cryptobot_during_the_trial(on_trial, engine, cryptopay_control):
    chat, user_id, trial_end = on_trial(9304)
    chat.say("/premium")
    chat.press("⭐ Buy 1 year")
    chat.press("🪙 CryptoBot")
    cryptopay_control.pay(int(last_payment(engine).provider_payment_id))
    chat.press("🔄 Check payment")
    assert premium_until(engine, user_id) == trial_end + timedelta(days=365)
    assert billing.status(engine, user_id).tier == "premium"


def test_a_month_paid_in_stars_during_the_trial(on_trial, engine):
    chat, user_id, trial_end = on_trial(9305)
    invoice, payment_id = order_month(chat, engine)
    assert checkout(chat, invoice)["outcome"] == "paid"
    until = trial_end + timedelta(days=30)
    assert premium_until(engine, user_id) == until
    notice = chat.emu.wait_for_message(chat.user_id, lambda m: "received" in (m["text"] or ""))
    assert notice["text"].endswith(f"premium until {until.astimezone(ZoneInfo(ZONE)):%d.%m.%Y}."
                                   " Thank you!")


def test_presses_that_change_nothing_on_the_premium_card_send_no_edit(on_trial, engine,
                                                                      emu_client):
    chat, user_id, _ = on_trial(9306)
    screen = chat.say("/premium")
    codec = CallbackCodec(TEST_TOKEN)
    for callback in (("prem",), ("topup",), ("prem",), ("trial",)):
        data = codec.encode(9306, *callback)
        chat.press(message_id=screen["message_id"], data=data)
        before, card = edits(emu_client), chat.message(screen["message_id"])
        answer = chat.press(message_id=screen["message_id"], data=data)
        assert answer.get("text") != "This button is no longer valid.", callback
        assert edits(emu_client) == before, callback
        assert chat.message(screen["message_id"]) == card
    # A press that does change the card still edits it.
    before = edits(emu_client)
    chat.press("⭐ Buy 1 month", message_id=screen["message_id"])
    assert edits(emu_client) == before + 1
