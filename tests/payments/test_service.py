"""Starting a payment at YooKassa and Crypto Pay, and the user's "check payment" button,
against the provider emulators, real PostgreSQL and Redis."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from habitbot.models import Payment
from habitbot.payments import service
from habitbot.payments.service import StartedPayment
from habitbot.services import billing
from habitbot.services.billing import BillingError
from tests.payments.support import alerts, credits, payment_row


def test_yookassa_top_up_is_created_with_our_key_and_metadata(runtime, alice, kassa,
                                                              kassa_control):
    started = service.start_payment(runtime, alice, "yookassa", "balance_topup",
                                    amount_minor=15000)
    assert isinstance(started, StartedPayment)
    row = payment_row(runtime.engine, started.payment_id)
    assert (row.status, row.amount_minor, row.currency) == ("pending", 15000, "RUB")
    assert started.confirmation_url == row.confirmation_url
    assert started.confirmation_url.startswith(f"{kassa.url}/pay/")
    remote = kassa_control.payment(row.provider_payment_id)
    assert remote["amount"] == {"value": "150.00", "currency": "RUB"}
    # Enough to recognise the row without our numeric id and to rebuild it if a restore
    # loses it (see test_restore.py).
    assert remote["metadata"] == {"payment_id": str(started.payment_id),
                                  "key": str(row.idempotence_key), "telegram_id": "7001",
                                  "type": "balance_topup"}
    assert remote["description"] == "HabitBot balance top-up"
    assert remote["confirmation"]["return_url"].startswith("https://t.me/")
    [create] = kassa_control.requests("create_payment")
    assert create["idempotence_key"] == str(row.idempotence_key)


def test_cryptobot_subscription_invoice_is_fiat_with_our_payload(runtime, alice,
                                                                 cryptopay_control):
    started = service.start_payment(runtime, alice, "cryptobot", "subscription", plan="month")
    assert (started.amount_minor, started.currency) == (billing.price("month", "RUB"), "RUB")
    row = payment_row(runtime.engine, started.payment_id)
    invoice = cryptopay_control.invoice(int(row.provider_payment_id))
    assert (invoice["currency_type"], invoice["fiat"], invoice["amount"]) == ("fiat", "RUB",
                                                                              "199")
    assert json.loads(invoice["payload"]) == {
        "payment_id": str(started.payment_id), "key": str(row.idempotence_key),
        "telegram_id": "7001", "type": "subscription", "plan": "month"}
    assert invoice["status"] == "active" and started.confirmation_url == invoice["bot_invoice_url"]


def test_provider_5xx_is_retried_with_the_same_idempotence_key(runtime, alice, kassa_control):
    kassa_control.add_fault("5xx", "create_payment", count=2)
    started = service.start_payment(runtime, alice, "yookassa", "subscription", plan="year")
    row = payment_row(runtime.engine, started.payment_id)
    attempts = kassa_control.requests("create_payment")
    assert len(attempts) == 3
    assert {a["idempotence_key"] for a in attempts} == {str(row.idempotence_key)}
    assert len(kassa_control.payments()) == 1 and row.status == "pending"


def test_a_lost_answer_is_retried_without_a_second_payment(runtime, alice, kassa_control):
    kassa_control.add_fault("timeout", "create_payment", count=1, after=True)
    started = service.start_payment(runtime, alice, "yookassa", "balance_topup",
                                    amount_minor=5000)
    assert len(kassa_control.payments()) == 1
    assert payment_row(runtime.engine, started.payment_id).provider_payment_id == \
        kassa_control.payments()[0]["id"]


def test_provider_timing_out_marks_the_payment_failed_and_alerts(runtime, alice,
                                                                 kassa_control):
    kassa_control.add_fault("timeout", "create_payment", count=3)
    with pytest.raises(BillingError, match="provider_unavailable"):
        service.start_payment(runtime, alice, "yookassa", "balance_topup", amount_minor=5000)
    [row] = _payments(runtime)
    assert row.status == "failed" and "timeout" in row.failure_reason
    assert alerts(runtime.engine, "creating a payment failed")
    # the user can simply try again
    again = service.start_payment(runtime, alice, "yookassa", "balance_topup",
                                  amount_minor=5000)
    assert payment_row(runtime.engine, again.payment_id).status == "pending"


def test_crypto_pay_down_marks_the_payment_failed(runtime, alice, cryptopay_control):
    cryptopay_control.add_fault("5xx", "createInvoice", count=3)
    with pytest.raises(BillingError, match="provider_unavailable"):
        service.start_payment(runtime, alice, "cryptobot", "balance_topup", amount_minor=5000)
    [row] = _payments(runtime)
    assert row.status == "failed"


def test_provider_refusal_is_a_provider_error(runtime, alice, kassa, monkeypatch):
    monkeypatch.setattr(kassa, "secret_key", "another-secret")
    with pytest.raises(BillingError, match="provider_error"):
        service.start_payment(runtime, alice, "yookassa", "balance_topup", amount_minor=5000)
    [row] = _payments(runtime)
    assert row.status == "failed" and "401" in row.failure_reason
    assert "another-secret" not in row.failure_reason


def test_unconfigured_provider_is_refused_before_anything_is_written(runtime, alice,
                                                                     monkeypatch):
    from dataclasses import replace

    monkeypatch.setattr(runtime, "settings", replace(runtime.settings, cryptobot_token=None))
    with pytest.raises(BillingError, match="provider_not_configured"):
        service.start_payment(runtime, alice, "cryptobot", "balance_topup", amount_minor=5000)
    assert _payments(runtime) == []


@pytest.mark.parametrize("provider, payment_type, kwargs, code", [
    ("paypal", "balance_topup", {"amount_minor": 5000}, "unknown_provider"),
    ("yookassa", "balance_topup", {"amount_minor": 5000, "currency": "XTR"},
     "unsupported_currency"),
    ("yookassa", "subscription", {"plan": "decade"}, "unknown_plan"),
    ("yookassa", "subscription", {"plan": "month", "currency": "USD"}, None),
    ("yookassa", "subscription", {}, "unknown_plan"),
    ("yookassa", "balance_topup", {}, "amount_required"),
    ("yookassa", "balance_topup", {"amount_minor": 0}, "amount_out_of_range"),
    ("yookassa", "balance_topup", {"amount_minor": -100}, "amount_out_of_range"),
    ("yookassa", "balance_topup", {"amount_minor": 10_000_001}, "amount_out_of_range"),
    ("yookassa", "balance_topup", {"amount_minor": "5000"}, "amount_required"),
    ("yookassa", "donation", {"amount_minor": 5000}, "unknown_payment_type"),
])
def test_bad_requests_write_nothing(runtime, alice, provider, payment_type, kwargs, code):
    if code is None:  # a valid variant next to the invalid ones
        started = service.start_payment(runtime, alice, provider, payment_type, **kwargs)
        assert started.amount_minor == billing.price("month", "USD")
        return
    with pytest.raises(BillingError) as caught:
        service.start_payment(runtime, alice, provider, payment_type, **kwargs)
    assert caught.value.code == code
    assert _payments(runtime) == []


def test_unknown_user_is_refused(runtime):
    with pytest.raises(BillingError, match="unknown_user"):
        service.start_payment(runtime, 999, "yookassa", "balance_topup", amount_minor=5000)
    assert _payments(runtime) == []


# ---------------------------------------------------------------- the "check payment" button

def test_check_payment_credits_once_when_paid(runtime, alice, kassa_control):
    kassa_control.set_webhook(enabled=False)
    started = service.start_payment(runtime, alice, "yookassa", "balance_topup",
                                    amount_minor=20000)
    assert service.check_payment(runtime, started.payment_id, alice) is None
    kassa_control.pay(payment_row(runtime.engine, started.payment_id).provider_payment_id)
    first = service.check_payment(runtime, started.payment_id, alice)
    second = service.check_payment(runtime, started.payment_id, alice)
    assert first is not None and (first.credited, first.balance_after) == (True, 20000)
    assert second is not None and (second.credited, second.status) == (False, "succeeded")
    assert billing.balance(runtime.engine, alice) == 20000 and credits(runtime.engine) == 1


def test_check_payment_of_another_user_is_refused(runtime, alice, engine, emu_client):
    from tests.payments.support import add_user

    mallory = add_user(engine, emu_client, 7666)
    started = service.start_payment(runtime, alice, "yookassa", "balance_topup",
                                    amount_minor=20000)
    for payment_id, user in ((started.payment_id, mallory), (started.payment_id + 99, alice)):
        with pytest.raises(BillingError, match="unknown_payment"):
            service.check_payment(runtime, payment_id, user)


def test_check_payment_sees_a_cancellation(runtime, alice, kassa_control):
    kassa_control.set_webhook(enabled=False)
    started = service.start_payment(runtime, alice, "yookassa", "subscription", plan="month")
    kassa_control.cancel(payment_row(runtime.engine, started.payment_id).provider_payment_id,
                         "insufficient_funds")
    result = service.check_payment(runtime, started.payment_id, alice)
    assert result is not None and (result.credited, result.status) == (False, "canceled")
    assert payment_row(runtime.engine, started.payment_id).failure_reason == \
        "insufficient_funds"


def test_check_payment_with_crypto_pay(runtime, alice, cryptopay_control):
    cryptopay_control.set_webhook(enabled=False)
    started = service.start_payment(runtime, alice, "cryptobot", "subscription", plan="month")
    invoice_id = int(payment_row(runtime.engine, started.payment_id).provider_payment_id)
    assert service.check_payment(runtime, started.payment_id, alice) is None
    cryptopay_control.pay(invoice_id, asset="TON")
    result = service.check_payment(runtime, started.payment_id, alice)
    assert result is not None and result.credited
    assert result.premium_until is not None and \
        result.premium_until > datetime.now(UTC) + timedelta(days=29)


def test_check_payment_after_the_invoice_expired(runtime, alice, cryptopay_control):
    started = service.start_payment(runtime, alice, "cryptobot", "balance_topup",
                                    amount_minor=5000)
    cryptopay_control.expire(int(payment_row(runtime.engine,
                                             started.payment_id).provider_payment_id))
    result = service.check_payment(runtime, started.payment_id, alice)
    assert result is not None and result.status == "canceled"


def test_check_payment_while_the_provider_is_down(runtime, alice, kassa_control):
    started = service.start_payment(runtime, alice, "yookassa", "balance_topup",
                                    amount_minor=5000)
    kassa_control.add_fault("5xx", "get_payment", count=3)
    with pytest.raises(BillingError, match="provider_unavailable"):
        service.check_payment(runtime, started.payment_id, alice)
    assert payment_row(runtime.engine, started.payment_id).status == "pending"


def test_check_button_racing_each_other_credits_once(runtime, alice, kassa_control):
    kassa_control.set_webhook(enabled=False)
    started = service.start_payment(runtime, alice, "yookassa", "balance_topup",
                                    amount_minor=7000)
    kassa_control.pay(payment_row(runtime.engine, started.payment_id).provider_payment_id)
    results: list[bool] = []
    lock = threading.Lock()

    def press() -> None:
        outcome = service.check_payment(runtime, started.payment_id, alice)
        with lock:
            results.append(bool(outcome and outcome.credited))

    threads = [threading.Thread(target=press) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1 and billing.balance(runtime.engine, alice) == 7000


def _payments(runtime) -> list:
    from sqlalchemy import select

    with runtime.engine.connect() as conn:
        return conn.execute(select(Payment).order_by(Payment.id)).all()

