"""Telegram Stars through the real bot and the emulator: the invoice, the pre-checkout answer
from the bot process, the credit on successful_payment — and every bad checkout refused with
nothing changed, a replay credited once, a second charge refunded."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, select, update

from habitbot.models import Payment, Subscription, User
from habitbot.payments import stars
from habitbot.services import billing

PRICE = billing.PRICES["month"]["XTR"]
INVALID = "This invoice is not valid. Open /premium to get a new one."


@pytest.fixture
def buyer(chat_with, engine):
    def make(telegram_id: int, language: str = "en"):
        chat = chat_with(telegram_id, "Star", language)
        chat.say("/help")
        with engine.begin() as conn:
            user_id = conn.execute(update(User).where(User.telegram_id == telegram_id).values(
                onboarded_at=User.created_at).returning(User.id)).scalar_one()
        return chat, user_id
    return make


def order_month(chat, engine) -> tuple[dict, int]:
    """/premium → 1 month → Telegram Stars; the invoice message and our payment id."""
    chat.say("/premium")
    chat.press("⭐ Buy 1 month")
    answer = chat.press(f"⭐ Telegram Stars ({PRICE} ⭐)")
    assert answer["text"] == "The invoice is below: pay it in Telegram Stars."
    invoice = chat.emu.wait_for_message(chat.user_id, lambda m: m["kind"] == "invoice")
    with engine.connect() as conn:
        payment_id = conn.execute(select(func.max(Payment.id)).where(
            Payment.provider == "stars")).scalar_one()
    return invoice, payment_id


def pre_checkout(chat, invoice: dict | None = None, **terms: Any) -> dict:
    """The user confirms; the bot answers; returns the answer (ok, error_message, id)."""
    if invoice is not None:
        terms["invoice_message_id"] = invoice["message_id"]
    query = chat.emu.pre_checkout(chat.user_id, **terms)
    chat._run()
    return chat.emu.wait_for_pre_checkout_answer(chat.user_id, query["pre_checkout_query_id"])


def pay(chat, **terms: Any) -> dict:
    paid = chat.emu.pay(chat.user_id, **terms)
    chat._run()
    return paid


def checkout(chat, invoice: dict) -> dict:
    """The whole payment as Telegram runs it (the emulator waits for the bot's answer), with
    the bot polling meanwhile."""
    result: dict = {}
    payer = threading.Thread(target=lambda: result.update(
        chat.emu.checkout(chat.user_id, invoice_message_id=invoice["message_id"])))
    payer.start()
    while payer.is_alive():
        chat._run()
    payer.join()
    chat._run()
    return result


def subscriptions(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Subscription)).scalar_one()


def payment(engine, payment_id: int):
    with engine.connect() as conn:
        return conn.execute(select(Payment).where(Payment.id == payment_id)).one()


def test_a_month_paid_in_stars(buyer, engine):
    chat, user_id = buyer(9201)
    invoice, payment_id = order_month(chat, engine)
    assert invoice["invoice"]["currency"] == "XTR"
    assert invoice["invoice"]["total_amount"] == PRICE
    assert invoice["invoice"]["title"] == "Premium: 1 month"
    row = payment(engine, payment_id)
    assert (row.status, row.plan, row.amount_minor, row.currency) == (
        "pending", "month", PRICE, "XTR")

    result = checkout(chat, invoice)
    assert result["outcome"] == "paid"
    row = payment(engine, payment_id)
    assert (row.status, row.provider_payment_id) == (
        "succeeded", result["telegram_payment_charge_id"])
    state = billing.status(engine, user_id)
    assert state.tier == "premium"
    notice = chat.emu.wait_for_message(chat.user_id, lambda m: "received" in (m["text"] or ""))
    assert notice["text"].startswith(f"✅ Payment of {PRICE} ⭐ received: premium until")
    assert subscriptions(engine) == 1


def test_pre_checkout_runs_on_its_own_lane():
    from telebot import types

    from habitbot.bot.dispatcher import ALLOWED_UPDATES, chat_of

    assert "pre_checkout_query" in ALLOWED_UPDATES
    update = types.Update.de_json({"update_id": 5, "pre_checkout_query": {
        "id": "q", "from": {"id": 42, "is_bot": False, "first_name": "A"}, "currency": "XTR",
        "total_amount": 1, "invoice_payload": "stars:1"}})
    assert chat_of(update) == ("pre_checkout", 42)


def test_the_bot_asks_telegram_for_pre_checkout_queries(buyer, emu_client):
    from habitbot.bot.dispatcher import ALLOWED_UPDATES

    buyer(9202)
    [bot] = emu_client.bots()
    assert bot["allowed_updates"] == sorted(ALLOWED_UPDATES)


def test_forged_and_mismatched_checkouts_are_refused(buyer, engine):
    chat, user_id = buyer(9203)
    invoice, payment_id = order_month(chat, engine)
    cases = [
        ({"invoice_payload": "hello", "currency": "XTR", "total_amount": PRICE}, INVALID),
        ({"invoice_payload": "stars:abc", "currency": "XTR", "total_amount": PRICE}, INVALID),
        ({"invoice_payload": "stars:999999", "currency": "XTR", "total_amount": PRICE},
         INVALID),
        ({"invoice_payload": f"stars:{payment_id}", "currency": "XTR", "total_amount": 1},
         "The price of this invoice has changed. Open /premium to get a new one."),
        ({"invoice_payload": f"stars:{payment_id}", "currency": "USD", "total_amount": PRICE},
         "The price of this invoice has changed. Open /premium to get a new one."),
    ]
    for terms, error in cases:
        answer = pre_checkout(chat, **terms)
        assert (answer["ok"], answer["error_message"]) == (False, error), terms
    assert payment(engine, payment_id).status == "pending"
    assert billing.status(engine, user_id).tier == "free"


def test_another_users_invoice_is_refused(buyer, engine):
    owner, _ = buyer(9204)
    intruder, intruder_id = buyer(9205)
    _, payment_id = order_month(owner, engine)
    answer = pre_checkout(intruder, invoice_payload=stars.invoice_payload(payment_id),
                          currency="XTR", total_amount=PRICE)
    assert (answer["ok"], answer["error_message"]) == (False, INVALID)
    assert billing.status(engine, intruder_id).tier == "free"
    assert payment(engine, payment_id).status == "pending"


def test_an_already_paid_invoice_is_refused_at_checkout(buyer, engine):
    chat, user_id = buyer(9206)
    invoice, payment_id = order_month(chat, engine)
    assert checkout(chat, invoice)["outcome"] == "paid"
    until = billing.status(engine, user_id).ends_at
    again = checkout(chat, invoice)
    assert again == {**again, "outcome": "declined",
                     "error_message": "This invoice has already been paid. See /premium."}
    assert billing.status(engine, user_id).ends_at == until
    assert len(chat.emu.payments()) == 1


def test_a_replayed_successful_payment_credits_once(buyer, engine):
    chat, user_id = buyer(9207)
    invoice, _ = order_month(chat, engine)
    paid = checkout(chat, invoice)
    until = billing.status(engine, user_id).ends_at
    bot_messages = len(chat.emu.messages(chat.user_id, sender="bot"))
    chat.emu.replay_payment(chat.user_id, paid["telegram_payment_charge_id"])
    chat._run()
    assert billing.status(engine, user_id).ends_at == until
    assert subscriptions(engine) == 1
    assert len(chat.emu.messages(chat.user_id, sender="bot")) == bot_messages
    assert [p["refunded"] for p in chat.emu.payments()] == [False]


def test_a_second_charge_for_a_paid_invoice_is_refunded(buyer, engine):
    """Two checkouts approved before either was paid: the second charge goes back."""
    chat, user_id = buyer(9208)
    invoice, payment_id = order_month(chat, engine)
    first = pre_checkout(chat, invoice)
    second = pre_checkout(chat, invoice)
    assert first["ok"] and second["ok"]
    pay(chat, invoice_message_id=invoice["message_id"],
        pre_checkout_query_id=first["pre_checkout_query_id"])
    until = billing.status(engine, user_id).ends_at
    extra = pay(chat, invoice_message_id=invoice["message_id"],
                pre_checkout_query_id=second["pre_checkout_query_id"])
    refunded = {p["telegram_payment_charge_id"]: p["refunded"] for p in chat.emu.payments()}
    assert refunded[extra["telegram_payment_charge_id"]] is True
    assert list(refunded.values()).count(True) == 1
    assert billing.status(engine, user_id).ends_at == until and subscriptions(engine) == 1
    assert chat.last()["text"] == (f"This payment could not be applied, so {PRICE} ⭐ was "
                                   "refunded to you. Open /premium to try again.")


def test_a_failed_invoice_send_leaves_no_pending_payment(buyer, engine, emu_client):
    chat, _ = buyer(9209)
    chat.say("/premium")
    chat.press("⭐ Buy 1 month")
    emu_client.add_fault("5xx", methods=["sendInvoice"], count=10)
    answer = chat.press(f"⭐ Telegram Stars ({PRICE} ⭐)")
    emu_client.clear_faults()
    assert answer["text"] == "The invoice could not be sent. Please try again." and \
        answer["show_alert"]
    with engine.connect() as conn:
        statuses = conn.execute(select(Payment.status)).scalars().all()
    assert statuses == ["failed"]
    # The same button works again (the press was given back).
    assert chat.press(f"⭐ Telegram Stars ({PRICE} ⭐)")["text"].startswith("The invoice is")


def test_database_down_at_payment_tells_the_user_and_alerts(
        database_url, redis_url, emulator, emu_client, redis_conn, engine, pg_proxy):
    """The Stars are taken but the database is gone: the user hears that the payment arrived,
    the operator gets the charge id to credit it by hand, nothing is half-written."""
    from habitbot.bot.app import PollingBot
    from habitbot.config import load_settings
    from habitbot.runtime import build_runtime
    from tests.bot.conftest import Chat
    from tests.conftest import ALERT_CHAT, make_env

    settings = load_settings(make_env(pg_proxy.url_for(database_url), redis_url, emulator.url,
                                      DB_CONNECT_TIMEOUT="1"))
    rt = build_runtime("bot", "bot", settings=settings, configure_logging=False)
    bot = PollingBot(rt, poll_timeout=1)
    try:
        emu_client.add_user(9210, first_name="Dee", language_code="en")
        chat = Chat(emu_client, bot, 9210)
        chat.say("/help")
        with engine.begin() as conn:
            user_id = conn.execute(update(User).where(User.telegram_id == 9210).values(
                onboarded_at=User.created_at).returning(User.id)).scalar_one()
        invoice, payment_id = order_month(chat, engine)
        approved = pre_checkout(chat, invoice)
        assert approved["ok"]
        pg_proxy.set_mode("refuse")
        paid = pay(chat, invoice_message_id=invoice["message_id"],
                   pre_checkout_query_id=approved["pre_checkout_query_id"])
        assert chat.last()["text"].startswith("Your payment has been received, but it could "
                                              "not be credited right away.")
        charge = paid["telegram_payment_charge_id"]
        alert = emu_client.wait_for_message(ALERT_CHAT, lambda m: charge in (m["text"] or ""))
        assert alert["text"].startswith("[CRITICAL] payments stars: Stars payment not credited")
    finally:
        pg_proxy.set_mode("pass")
        bot.executor.shutdown()
        rt.close()
    assert payment(engine, payment_id).status == "pending"
    assert billing.status(engine, user_id).tier == "free"
    assert [p["refunded"] for p in emu_client.payments()] == [False]
