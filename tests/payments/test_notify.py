"""What the user is told after a credit or a refund: their language, their timezone, the
committed numbers; and a Telegram failure never turns into an exception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from habitbot.models import User
from habitbot.payments import notify
from habitbot.services import billing
from tests.payments.support import ALICE_TG, add_user, bot_texts, paid_top_up, run_jobs


def test_top_up_notice_shows_the_new_balance(runtime, alice, emu_client):
    paid_top_up(runtime.engine, alice, 5000)
    payment_id = paid_top_up(runtime.engine, alice, 15000)
    notify.notify_completion(runtime, payment_id)
    assert bot_texts(emu_client, ALICE_TG) == [
        "✅ Payment received: 150.00 ₽ added to your balance.\nBalance: 200.00 ₽."]


def test_premium_notice_shows_the_end_date_in_the_users_timezone(runtime, engine, emu_client):
    # 23:30 UTC is already the next day in Vladivostok
    boris = add_user(engine, emu_client, 7002, language="ru", timezone="Asia/Vladivostok")
    payment_id, _ = billing.create_payment(engine, boris, "cryptobot", "subscription", 19900,
                                           "RUB", plan="month")
    now = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    billing.complete_payment(engine, payment_id, 19900, "RUB", "inv-1", now=now)
    notify.notify_completion(runtime, payment_id)
    [text] = bot_texts(emu_client, 7002)
    assert "01.04.2026" in text and "199.00 ₽" in text
    assert "Payment" not in text  # Russian, the user's language


def test_pending_or_unknown_payments_send_nothing(runtime, alice, emu_client):
    pending, _ = billing.create_payment(runtime.engine, alice, "yookassa", "balance_topup",
                                        100, "RUB")
    notify.notify_completion(runtime, pending)
    notify.notify_completion(runtime, 424242)
    assert bot_texts(emu_client, ALICE_TG) == []


def test_a_blocked_user_or_telegram_down_does_not_raise(runtime, alice, emu_client,
                                                        monkeypatch):
    payment_id = paid_top_up(runtime.engine, alice, 5000)
    emu_client.block(ALICE_TG)
    notify.notify_completion(runtime, payment_id)  # no exception
    emu_client.unblock(ALICE_TG)
    runtime.sender.unblock(ALICE_TG)
    monkeypatch.setattr(runtime.sender, "_sleep", lambda seconds: None)
    emu_client.add_fault("5xx", methods=["sendMessage"], count=10)
    notify.notify_completion(runtime, payment_id)  # no exception either
    assert bot_texts(emu_client, ALICE_TG) == []


def test_refund_notices(runtime, alice, emu_client):
    top_up = paid_top_up(runtime.engine, alice, 10000)
    outcome = billing.apply_refund(runtime.engine, top_up, "rf-1", 4000)
    notify.notify_refund(runtime, outcome.refund_id)
    month, _ = billing.create_payment(runtime.engine, alice, "yookassa", "subscription",
                                      19900, "RUB", plan="month")
    billing.complete_payment(runtime.engine, month, 19900, "RUB", "yk-month")
    half = billing.apply_refund(runtime.engine, month, "rf-2", 9950)
    notify.notify_refund(runtime, half.refund_id)
    rest = billing.apply_refund(runtime.engine, month, "rf-3", 9950)
    notify.notify_refund(runtime, rest.refund_id)
    texts = bot_texts(emu_client, ALICE_TG)
    assert texts[0] == "↩️ Refund of 40.00 ₽ for a balance top-up.\nBalance: 60.00 ₽."
    assert texts[1].startswith("↩️ Refund of 99.50 ₽ for premium. Premium is now until ")
    assert texts[2] == "↩️ Refund of 99.50 ₽ for premium. Premium has ended."


def test_webhook_notices_go_through_a_worker(runtime, alice, emu_client):
    payment_id = paid_top_up(runtime.engine, alice, 5000)
    notify.enqueue_completion_notice(runtime, payment_id)
    assert bot_texts(emu_client, ALICE_TG) == []
    run_jobs(runtime)
    assert len(bot_texts(emu_client, ALICE_TG)) == 1


def test_without_redis_the_notice_is_sent_at_once(runtime, alice, emu_client, redis_proxy,
                                                 monkeypatch):
    from habitbot.redis_client import make_redis

    payment_id = paid_top_up(runtime.engine, alice, 5000)
    dead = make_redis(redis_proxy.url_for(runtime.settings.redis_url), timeout=0.5)
    redis_proxy.set_mode("refuse")
    monkeypatch.setattr(runtime, "redis", dead)
    notify.enqueue_completion_notice(runtime, payment_id)
    assert len(bot_texts(emu_client, ALICE_TG)) == 1


def test_premium_date_follows_later_changes(runtime, alice, engine, emu_client):
    payment_id, _ = billing.create_payment(engine, alice, "yookassa", "subscription", 19900,
                                           "RUB", plan="month")
    billing.complete_payment(engine, payment_id, 19900, "RUB", "yk-9")
    later = datetime.now(UTC) + timedelta(days=100)
    with engine.begin() as conn:
        conn.execute(update(User).where(User.id == alice).values(premium_ends_at=later))
    notify.notify_completion(runtime, payment_id)
    [text] = bot_texts(emu_client, ALICE_TG)
    assert notify.local_date(later, "Europe/Berlin") in text
