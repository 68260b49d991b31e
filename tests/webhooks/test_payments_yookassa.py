"""POST /webhooks/yookassa: the YooKassa emulator notifies the real app over HTTP; the app
trusts the source address and the re-read payment, never the body."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import requests
from sqlalchemy import update

from habitbot import metrics
from habitbot.config import load_settings
from habitbot.models import Payment
from habitbot.payments import service
from habitbot.services import billing
from tests.payments.support import (
    ALICE_TG,
    SECRET,
    SHOP_ID,
    alerts,
    credits,
    make_web,
    payment_env,
    payment_row,
    run_jobs,
    serving,
)
from tests.support.polling import wait_until
from webhooks.proxies import client_ip

SAMPLES = Path("/work/shared/samples")


def _top_up(web, user_id: int, amount: int = 10000):
    started = service.start_payment(web.runtime, user_id, "yookassa", "balance_topup",
                                    amount_minor=amount)
    return started.payment_id, payment_row(web.runtime.engine, started.payment_id)


def _kassa_payment(kassa, amount: str, metadata: dict, capture: bool = True,
                   currency: str = "RUB") -> dict:
    """A payment made at YooKassa directly (not by our code)."""
    response = requests.post(f"{kassa.api_url}/payments", auth=(SHOP_ID, SECRET), timeout=5,
                             headers={"Idempotence-Key": str(uuid.uuid4())},
                             json={"amount": {"value": amount, "currency": currency},
                                   "capture": capture, "metadata": metadata,
                                   "confirmation": {"type": "redirect",
                                                    "return_url": "https://t.me/x"}})
    response.raise_for_status()
    return response.json()


def _statuses(kassa_control, provider_id: str) -> list[int | None]:
    return [s for d in kassa_control.deliveries(provider_id) for s in d["statuses"]]


def test_paid_top_up_is_credited_once_and_the_user_is_told(web, alice, kassa_control,
                                                           emu_client):
    payment_id, row = _top_up(web, alice, 15000)
    kassa_control.pay(row.provider_payment_id)
    [delivery] = kassa_control.wait_delivered(row.provider_payment_id)
    assert delivery["statuses"] == [200]
    assert payment_row(web.runtime.engine, payment_id).status == "succeeded"
    assert billing.balance(web.runtime.engine, alice) == 15000
    run_jobs(web.runtime)
    [notice] = emu_client.messages(ALICE_TG, sender="bot")
    assert "150.00 ₽" in notice["text"]


def test_hundred_concurrent_duplicates_credit_exactly_once(web, alice, kassa_control):
    payment_id, row = _top_up(web, alice, 5000)
    kassa_control.pay(row.provider_payment_id)
    kassa_control.wait_delivered(row.provider_payment_id)
    kassa_control.resend(row.provider_payment_id, copies=100, concurrent=True)
    delivered = kassa_control.wait_delivered(row.provider_payment_id, count=101, timeout=60)
    assert all(d["statuses"][-1] == 200 for d in delivered)
    assert credits(web.runtime.engine) == 1
    assert billing.balance(web.runtime.engine, alice) == 5000
    # /metrics: one credit, 101 notifications handled (1 credited, 100 already final).
    counted = metrics.stored(web.runtime.redis)
    assert counted['habitbot_payments_credited_total{provider="yookassa",type="balance_topup"}'] \
        == 1
    outcomes = {k: v for k, v in counted.items() if k.startswith("habitbot_webhooks_total")}
    assert outcomes['habitbot_webhooks_total{provider="yookassa",outcome="credited"}'] == 1
    assert sum(outcomes.values()) == 101


def test_forged_success_of_an_unpaid_payment_credits_nothing(web, alice, kassa_control):
    payment_id, row = _top_up(web, alice)
    kassa_control.notify(row.provider_payment_id, "payment.succeeded",
                         overrides={"status": "succeeded", "paid": True})
    [delivery] = kassa_control.wait_delivered(row.provider_payment_id)
    assert delivery["statuses"] == [200]
    assert payment_row(web.runtime.engine, payment_id).status == "pending"
    assert billing.balance(web.runtime.engine, alice) == 0


def test_late_cancel_after_success_changes_nothing(web, alice, kassa_control):
    payment_id, row = _top_up(web, alice, 3000)
    kassa_control.pay(row.provider_payment_id)
    kassa_control.wait_delivered(row.provider_payment_id)
    kassa_control.notify(row.provider_payment_id, "payment.canceled",
                         overrides={"status": "canceled"})
    kassa_control.wait_delivered(row.provider_payment_id, count=2)
    assert payment_row(web.runtime.engine, payment_id).status == "succeeded"
    assert billing.balance(web.runtime.engine, alice) == 3000


def test_out_of_order_events_follow_the_re_read_status(web, alice, kassa_control):
    kassa_control.set_webhook(enabled=False)
    payment_id, row = _top_up(web, alice, 4000)
    kassa_control.pay(row.provider_payment_id)
    kassa_control.set_webhook(enabled=True)
    # a stale "waiting_for_capture" arrives after the payment already succeeded
    kassa_control.notify(row.provider_payment_id, "payment.waiting_for_capture",
                         overrides={"status": "waiting_for_capture"})
    kassa_control.wait_delivered(row.provider_payment_id)
    assert payment_row(web.runtime.engine, payment_id).status == "succeeded"
    assert billing.balance(web.runtime.engine, alice) == 4000


def test_canceled_payment_is_closed_without_credit(web, alice, kassa_control):
    payment_id, row = _top_up(web, alice)
    kassa_control.cancel(row.provider_payment_id, "insufficient_funds")
    kassa_control.wait_delivered(row.provider_payment_id)
    closed = payment_row(web.runtime.engine, payment_id)
    assert (closed.status, closed.failure_reason) == ("canceled", "insufficient_funds")


def test_authorised_payment_is_captured_then_credited_once(web, alice, kassa, kassa_control):
    payment_id, key = billing.create_payment(web.runtime.engine, alice, "yookassa",
                                             "subscription", 19900, "RUB", plan="month")
    remote = _kassa_payment(kassa, "199.00", {"payment_id": str(payment_id)}, capture=False)
    billing.attach_provider_payment(web.runtime.engine, payment_id, remote["id"])
    kassa_control.pay(remote["id"])
    wait_until(lambda: len(kassa_control.wait_delivered(remote["id"], count=2)) == 2,
               timeout=15, what="waiting_for_capture and succeeded delivered")
    assert kassa_control.payment(remote["id"])["status"] == "succeeded"
    assert [r["idempotence_key"] for r in kassa_control.requests("capture_payment")] == [
        str(uuid.uuid5(key, "capture"))]
    assert payment_row(web.runtime.engine, payment_id).status == "succeeded"
    assert billing.status(web.runtime.engine, alice).tier == "premium"


def test_authorisation_with_a_wrong_amount_is_canceled_and_alerted(web, alice, kassa,
                                                                   kassa_control):
    payment_id, _ = billing.create_payment(web.runtime.engine, alice, "yookassa",
                                           "balance_topup", 10000, "RUB")
    remote = _kassa_payment(kassa, "1.00", {"payment_id": str(payment_id)}, capture=False)
    kassa_control.pay(remote["id"])
    kassa_control.wait_delivered(remote["id"], event="payment.waiting_for_capture")
    assert kassa_control.payment(remote["id"])["status"] == "canceled"
    assert payment_row(web.runtime.engine, payment_id).status == "canceled"
    assert billing.balance(web.runtime.engine, alice) == 0
    assert alerts(web.runtime.engine, "differs from ours")


@pytest.mark.parametrize("amount, currency", [("99.99", "RUB"), ("100.00", "USD")])
def test_wrong_amount_or_currency_is_not_credited_and_alerted(web, alice, kassa,
                                                             kassa_control, amount, currency):
    payment_id, _ = billing.create_payment(web.runtime.engine, alice, "yookassa",
                                           "balance_topup", 10000, "RUB")
    remote = _kassa_payment(kassa, amount, {"payment_id": str(payment_id)},
                            currency=currency)
    kassa_control.pay(remote["id"])
    [delivery] = kassa_control.wait_delivered(remote["id"])
    assert delivery["statuses"] == [200]
    assert payment_row(web.runtime.engine, payment_id).status == "pending"
    assert billing.balance(web.runtime.engine, alice) == 0
    [alert] = alerts(web.runtime.engine, "was not credited")
    assert "[CRITICAL]" in alert and "differs from ours" in alert


def test_metadata_naming_another_users_payment_is_refused(web, alice, kassa, kassa_control):
    payment_id, row = _top_up(web, alice, 10000)
    impostor = _kassa_payment(kassa, "100.00", {"payment_id": str(payment_id)})
    kassa_control.pay(impostor["id"])
    kassa_control.wait_delivered(impostor["id"])
    assert payment_row(web.runtime.engine, payment_id).status == "pending"
    assert alerts(web.runtime.engine, f"our payment {payment_id} is yookassa payment")


def test_unknown_payments_change_nothing_and_are_answered_200(web, alice, kassa,
                                                              kassa_control):
    stranger = _kassa_payment(kassa, "10.00", {"order": "elsewhere"})
    kassa_control.pay(stranger["id"])
    [delivery] = kassa_control.wait_delivered(stranger["id"])
    assert delivery["statuses"] == [200]
    body = {"type": "notification", "event": "payment.succeeded",
            "object": {"id": "2203aa1d-000f-5000-8000-17102541fd31", "status": "succeeded"}}
    answer = web.post("/webhooks/yookassa", json.dumps(body).encode())
    assert answer.status_code == 200 and answer.get_json()["outcome"] == "unknown"
    assert credits(web.runtime.engine) == 0
    assert alerts(web.runtime.engine, "is not one of ours")


def test_event_for_another_shop_is_ignored_without_a_call(web, kassa_control):
    sample = (SAMPLES / "yookassa_payment_waiting_for_capture_githubdocs.json").read_bytes()
    answer = web.post("/webhooks/yookassa", sample)
    assert answer.status_code == 200 and answer.get_json()["outcome"] == "other_shop"
    assert kassa_control.requests() == []
    assert alerts(web.runtime.engine, "for shop 000005")


def test_real_sample_of_our_shop_is_re_read(web, kassa_control):
    sample = (SAMPLES / "yookassa_payment_succeeded.json").read_bytes()  # shop 500105
    answer = web.post("/webhooks/yookassa", sample)
    assert answer.status_code == 200 and answer.get_json()["outcome"] == "unknown"
    [reread] = kassa_control.requests("get_payment")
    assert reread["object_id"] == "2203aa1d-000f-5000-8000-17102541fd31"


@pytest.mark.parametrize("body", [
    b"not json", b"[1, 2]", b"{}", b'{"type": "notification", "event": "payment.succeeded"}',
    b'{"type": "notification", "event": "payment.succeeded", "object": {"id": "../refunds"}}',
    b'{"type": "notification", "event": "refund.succeeded", "object": {"id": "r1"}}',
    "{\"type\": \"notification\", \"event\": \"x\", \"object\": {\"id\": \"\u00e9\"}}".encode(),
    b"\xff\xfe",
])
def test_malformed_notifications_are_400(web, alice, kassa_control, body):
    answer = web.post("/webhooks/yookassa", body)
    assert answer.status_code == 400 and answer.get_json()["error"] == "malformed"
    assert kassa_control.requests() == []


def test_a_megabyte_body_is_413(web, kassa_control):
    answer = web.post("/webhooks/yookassa", b"{" + b" " * (1024 * 1024) + b"}")
    assert answer.status_code == 413 and answer.get_json()["error"] == "too_large"
    served = requests.post(f"{web.url}/webhooks/yookassa", data=b"x" * (1024 * 1024),
                           timeout=10)
    assert served.status_code == 413
    assert kassa_control.requests() == []


def test_untrusted_source_is_403_and_alerts(web, alice, kassa_control):
    payment_id, row = _top_up(web, alice)
    kassa_control.pay(row.provider_payment_id)
    kassa_control.wait_delivered(row.provider_payment_id)
    body = json.dumps({"type": "notification", "event": "payment.succeeded",
                       "object": {"id": row.provider_payment_id}}).encode()
    before = len(kassa_control.requests())
    answer = web.post("/webhooks/yookassa", body, remote_addr="203.0.113.7")
    assert answer.status_code == 403 and answer.get_json()["error"] == "untrusted_source"
    assert len(kassa_control.requests()) == before
    assert alerts(web.runtime.engine, "203.0.113.7 was refused")


def test_behind_a_proxy_the_forwarded_address_is_checked(monkeypatch, kassa, cryptopay,
                                                         database_url, redis_url, emulator,
                                                         redis_conn):
    settings = load_settings(payment_env(database_url, redis_url, emulator.url, kassa,
                                         cryptopay, TRUSTED_PROXIES="1",
                                         YOOKASSA_TRUSTED_IPS="185.71.76.0/27"))
    app = make_web(settings, monkeypatch)
    body = json.dumps({"type": "notification", "event": "payment.succeeded",
                       "object": {"id": "2203aa1d-000f-5000-8000-17102541fd31"}}).encode()
    try:
        def post(forwarded: str | None) -> int:
            headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
            return app.post("/webhooks/yookassa", body, headers=headers).status_code

        assert post("185.71.76.5") == 200
        assert post("10.0.0.1, 185.71.76.5") == 200
        assert post("185.71.76.5, 10.0.0.1") == 403  # the client wrote the left part
        assert post(None) == 403
        assert post("garbage") == 403
    finally:
        app.runtime.close()


def test_client_ip_rules():
    assert str(client_ip("127.0.0.1", None, 0)) == "127.0.0.1"
    assert str(client_ip("127.0.0.1", "1.1.1.1", 0)) == "127.0.0.1"
    assert str(client_ip("127.0.0.1", "1.1.1.1, 2.2.2.2, 3.3.3.3", 2)) == "2.2.2.2"
    assert client_ip("127.0.0.1", "3.3.3.3", 2) is None
    assert str(client_ip("::ffff:185.71.76.1", None, 0)) == "185.71.76.1"
    assert client_ip(None, None, 0) is None


def test_provider_5xx_during_the_re_read_is_503_then_retried(web, alice, kassa_control):
    payment_id, row = _top_up(web, alice, 6000)
    kassa_control.add_fault("5xx", "get_payment", count=3)
    kassa_control.pay(row.provider_payment_id)
    [delivery] = kassa_control.wait_delivered(row.provider_payment_id, timeout=20)
    assert delivery["statuses"][0] == 503 and delivery["statuses"][-1] == 200
    assert credits(web.runtime.engine) == 1
    assert alerts(web.runtime.engine, "could not be verified")


def test_provider_5xx_leaves_nothing_credited(web, alice, kassa_control):
    payment_id, row = _top_up(web, alice, 6000)
    kassa_control.set_webhook(enabled=False)
    kassa_control.pay(row.provider_payment_id)
    kassa_control.add_fault("5xx", "get_payment")
    body = json.dumps({"type": "notification", "event": "payment.succeeded",
                       "object": {"id": row.provider_payment_id}}).encode()
    answer = web.post("/webhooks/yookassa", body)
    assert answer.status_code == 503 and answer.get_json()["error"] == "provider_unavailable"
    assert credits(web.runtime.engine) == 0


def test_database_down_is_503_and_nothing_is_lost(monkeypatch, alice, kassa, kassa_control,
                                                  cryptopay, database_url, redis_url,
                                                  emulator, pg_proxy, engine):
    settings = load_settings(payment_env(pg_proxy.url_for(database_url), redis_url,
                                         emulator.url, kassa, cryptopay,
                                         DB_CONNECT_TIMEOUT="1"))
    with serving(make_web(settings, monkeypatch)) as served:
        kassa_control.set_webhook(f"{served.url}/webhooks/yookassa",
                                  retry_delays=[0.2] * 30)
        payment_id, row = _top_up(served, alice, 8000)
        pg_proxy.set_mode("refuse")
        kassa_control.pay(row.provider_payment_id)
        wait_until(lambda: 503 in _statuses(kassa_control, row.provider_payment_id),
                   timeout=20, what="a 503 while the database is down")
        assert billing.balance(engine, alice) == 0
        pg_proxy.set_mode("pass")
        [delivery] = kassa_control.wait_delivered(row.provider_payment_id, timeout=30)
        assert delivery["statuses"][-1] == 200
        assert billing.balance(engine, alice) == 8000 and credits(engine) == 1
    served.runtime.close()


def test_refund_is_applied_once_and_the_user_is_told(web, alice, kassa_control, emu_client):
    payment_id, row = _top_up(web, alice, 10000)
    kassa_control.pay(row.provider_payment_id)
    kassa_control.wait_delivered(row.provider_payment_id)
    refund = kassa_control.refund(row.provider_payment_id, amount="40.00")
    kassa_control.wait_delivered(row.provider_payment_id, event="refund.succeeded")
    kassa_control.resend(row.provider_payment_id, event="refund.succeeded", copies=5,
                         concurrent=True)
    kassa_control.wait_delivered(row.provider_payment_id, count=6, event="refund.succeeded")
    assert billing.balance(web.runtime.engine, alice) == 6000
    [applied] = billing.refunds_of(web.runtime.engine, payment_id)
    assert (applied.provider_refund_id, applied.amount_minor) == (refund["id"], 4000)
    run_jobs(web.runtime)
    texts = [m["text"] for m in emu_client.messages(ALICE_TG, sender="bot")]
    assert any(t.startswith("↩️ Refund of 40.00 ₽") for t in texts)


def test_refund_of_a_spent_top_up_alerts_the_operator(web, alice, kassa_control):
    payment_id, row = _top_up(web, alice, 25000)
    kassa_control.pay(row.provider_payment_id)
    kassa_control.wait_delivered(row.provider_payment_id)
    billing.buy_with_balance(web.runtime.engine, alice, "month")
    kassa_control.refund(row.provider_payment_id)
    kassa_control.wait_delivered(row.provider_payment_id, event="refund.succeeded")
    assert billing.balance(web.runtime.engine, alice) == 0
    assert payment_row(web.runtime.engine, payment_id).status == "refunded"
    [alert] = alerts(web.runtime.engine, "had already spent")
    assert "[CRITICAL]" in alert and "19900" in alert


def test_refund_arriving_before_the_success_applies_both(web, alice, kassa_control, engine):
    kassa_control.set_webhook(enabled=False)
    payment_id, row = _top_up(web, alice, 10000)
    kassa_control.pay(row.provider_payment_id)
    kassa_control.refund(row.provider_payment_id, amount="30.00")
    kassa_control.set_webhook(enabled=True)
    kassa_control.resend(row.provider_payment_id, event="refund.succeeded")
    kassa_control.wait_delivered(row.provider_payment_id, event="refund.succeeded")
    assert billing.balance(engine, alice) == 7000 and credits(engine) == 1


def test_not_configured_is_503(web, monkeypatch):
    from dataclasses import replace

    monkeypatch.setattr(web.runtime, "settings",
                        replace(web.runtime.settings, yookassa_secret_key=None))
    answer = web.post("/webhooks/yookassa", b'{"type": "notification"}')
    assert answer.status_code == 503


def test_credited_answer_survives_a_failing_notice(web, alice, kassa_control, monkeypatch):
    from habitbot.payments import notify

    def broken(*args, **kwargs):
        raise RuntimeError("queue exploded")

    monkeypatch.setattr(notify, "_push", broken)
    payment_id, row = _top_up(web, alice, 1200)
    kassa_control.pay(row.provider_payment_id)
    [delivery] = kassa_control.wait_delivered(row.provider_payment_id)
    assert delivery["statuses"] == [200] and credits(web.runtime.engine) == 1


def test_pending_row_with_a_lost_provider_id_is_found_by_metadata(web, alice, kassa_control):
    payment_id, row = _top_up(web, alice, 2500)
    with web.runtime.engine.begin() as conn:
        conn.execute(update(Payment).where(Payment.id == payment_id)
                     .values(provider_payment_id=None))
    kassa_control.pay(row.provider_payment_id)
    kassa_control.wait_delivered(row.provider_payment_id)
    after = payment_row(web.runtime.engine, payment_id)
    assert (after.status, after.provider_payment_id) == ("succeeded", row.provider_payment_id)
