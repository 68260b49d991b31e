"""Telegram Stars against the Telegram emulator: the payload, the pre-checkout check, crediting
a charge exactly once, and operator refunds through refundStarPayment (idempotent)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, select, update

from habitbot.models import Payment, PaymentRefund, User
from habitbot.payments import operator, stars
from habitbot.payments.origin import Origin
from habitbot.payments.stars import StarsError
from habitbot.services import billing
from tests.payments.support import ALICE_TG, add_user, alerts, count

PRICE = billing.PRICES["month"]["XTR"]


def stars_payment(engine, user_id: int, plan: str = "month") -> int:
    payment_id, _ = billing.create_payment(engine, user_id, "stars", "subscription",
                                           billing.PRICES[plan]["XTR"], "XTR", plan=plan)
    return payment_id


def charge(emu_client, telegram_id: int, payment_id: int, amount: int = PRICE,
           currency: str = "XTR") -> str:
    """The user pays at Telegram: a real charge the emulator can refund later."""
    return emu_client.pay(telegram_id, invoice_payload=stars.invoice_payload(payment_id),
                          currency=currency, total_amount=amount)["telegram_payment_charge_id"]


def paid(runtime, emu_client, telegram_id: int, payment_id: int) -> str:
    charge_id = charge(emu_client, telegram_id, payment_id)
    result = stars.settle(runtime, telegram_id, stars.invoice_payload(payment_id), "XTR", PRICE,
                          charge_id)
    assert result.outcome == "credited"
    return charge_id


def row(engine, payment_id: int):
    with engine.connect() as conn:
        return conn.execute(select(Payment).where(Payment.id == payment_id)).one()


@pytest.mark.parametrize("payload", [None, "", "stars:", "stars:-1", "stars:1e3", "stars: 1",
                                     "stars:١٢", "other:12", "stars:" + "9" * 19, "STARS:1"])
def test_payloads_we_did_not_write_are_refused(payload):
    assert stars.parse_payload(payload) is None


def test_payload_round_trip():
    assert stars.parse_payload(stars.invoice_payload(12345)) == 12345
    key = uuid.uuid4()
    payload = stars.invoice_payload(12345, key, "year")
    assert len(payload.encode()) <= 64  # Telegram allows 128 bytes
    assert stars.parse_origin(payload, 77) == Origin(12345, key, 77, "subscription", "year")
    assert stars.parse_origin(payload, 77).restorable


@pytest.mark.parametrize("tail", [":abc:month", f":{'0' * 31}:month", f":{'g' * 32}:month",
                                  f":{'0' * 32}:week", f":{'0' * 32}", f":{'0' * 32}:month:x"])
def test_malformed_new_payloads_are_refused(tail):
    assert stars.parse_origin(f"stars:12{tail}") == Origin(None)


def test_a_charge_whose_row_a_restore_lost_is_recreated_and_credited(runtime, engine,
                                                                     emu_client, alice):
    """The invoice was sent and paid after the backup: the row is gone and our id 1 may be
    reused by someone else's new payment; the charge (payload and payer) re-creates it."""
    payment_id = stars.send_invoice(runtime, alice, ALICE_TG, "month", title="Premium",
                                    description="A month", label="Premium")
    payload = stars.invoice_payload(payment_id, row(engine, payment_id).idempotence_key, "month")
    with engine.begin() as conn:
        conn.execute(delete(Payment).where(Payment.id == payment_id))
    bob = add_user(engine, emu_client, 7002)
    reused = stars_payment(engine, bob)  # a fresh sequence would hand out the same id
    with engine.begin() as conn:
        conn.execute(update(Payment).where(Payment.id == reused).values(id=payment_id))
    charge_id = emu_client.pay(ALICE_TG, invoice_payload=payload, currency="XTR",
                               total_amount=PRICE)["telegram_payment_charge_id"]
    settled = stars.settle(runtime, ALICE_TG, payload, "XTR", PRICE, charge_id)
    assert settled.outcome == "credited" and settled.payment_id != payment_id
    assert row(engine, payment_id).status == "pending"  # Bob's, untouched
    assert billing.status(engine, alice).tier == "premium"
    assert billing.status(engine, bob).tier == "free"
    assert alerts(engine, f"re-created from the provider's record as payment "
                          f"{settled.payment_id} (it was {payment_id})")
    assert stars.settle(runtime, ALICE_TG, payload, "XTR", PRICE, charge_id).outcome == \
        "duplicate"
    assert [p["refunded"] for p in emu_client.payments()] == [False]


def test_completing_a_charge_whose_row_a_restore_lost(runtime, engine, emu_client, alice):
    payment_id = stars.send_invoice(runtime, alice, ALICE_TG, "year", title="Premium",
                                    description="A year", label="Premium")
    payload = stars.invoice_payload(payment_id, row(engine, payment_id).idempotence_key, "year")
    charge_id = emu_client.pay(ALICE_TG, invoice_payload=payload, currency="XTR",
                               total_amount=billing.PRICES["year"]["XTR"]
                               )["telegram_payment_charge_id"]
    with engine.begin() as conn:
        conn.execute(delete(Payment).where(Payment.id == payment_id))
    done = operator.complete(runtime, "stars", provider_id=charge_id)
    assert done.action == "credited", done
    assert billing.status(engine, alice).tier == "premium"
    again = operator.complete(runtime, "stars", provider_id=charge_id)
    assert again.action == "already"


def test_checkout_accepts_only_our_pending_payment_for_its_price(runtime, engine, emu_client,
                                                                  alice):
    payment_id = stars_payment(engine, alice)
    payload = stars.invoice_payload(payment_id)
    assert stars.check_checkout(engine, ALICE_TG, payload, "XTR", PRICE) == payment_id
    add_user(engine, emu_client, 7002)  # Bob, who did not order it
    yookassa_id, _ = billing.create_payment(engine, alice, "yookassa", "subscription", 19900,
                                            "RUB", plan="month")
    cases = [
        (ALICE_TG, "nonsense", "XTR", PRICE, "bad_payload"),
        (ALICE_TG, "stars:999999", "XTR", PRICE, "unknown_payment"),
        (7002, payload, "XTR", PRICE, "unknown_payment"),
        (ALICE_TG, stars.invoice_payload(yookassa_id), "RUB", 19900, "unknown_payment"),
        (ALICE_TG, payload, "XTR", PRICE + 1, "amount_mismatch"),
        (ALICE_TG, payload, "RUB", PRICE, "amount_mismatch"),
    ]
    for telegram_id, body, currency, amount, code in cases:
        with pytest.raises(StarsError) as refused:
            stars.check_checkout(engine, telegram_id, body, currency, amount)
        assert refused.value.code == code
    assert row(engine, payment_id).status == "pending"
    billing.fail_payment(engine, payment_id, "test")
    with pytest.raises(StarsError) as closed:
        stars.check_checkout(engine, ALICE_TG, payload, "XTR", PRICE)
    assert closed.value.code == "not_payable"


def test_a_charge_is_credited_once_and_a_replay_changes_nothing(runtime, engine, emu_client,
                                                                alice):
    payment_id = stars_payment(engine, alice)
    charge_id = paid(runtime, emu_client, ALICE_TG, payment_id)
    assert (row(engine, payment_id).status, row(engine, payment_id).provider_payment_id) == (
        "succeeded", charge_id)
    until = billing.status(engine, alice).ends_at
    again = stars.settle(runtime, ALICE_TG, stars.invoice_payload(payment_id), "XTR", PRICE,
                         charge_id)
    assert (again.outcome, again.payment_id) == ("duplicate", payment_id)
    assert billing.status(engine, alice).ends_at == until
    with pytest.raises(StarsError) as checkout:
        stars.check_checkout(engine, ALICE_TG, stars.invoice_payload(payment_id), "XTR", PRICE)
    assert checkout.value.code == "already_paid"
    assert [p["refunded"] for p in emu_client.payments()] == [False]


def test_a_charge_we_cannot_credit_is_refunded_and_alerted(runtime, engine, emu_client, alice):
    payment_id = stars_payment(engine, alice)
    wrong_amount = charge(emu_client, ALICE_TG, payment_id, amount=PRICE - 1)
    result = stars.settle(runtime, ALICE_TG, stars.invoice_payload(payment_id), "XTR",
                          PRICE - 1, wrong_amount)
    assert (result.outcome, result.reason) == ("refunded", "amount_mismatch")
    unknown = emu_client.pay(ALICE_TG, invoice_payload="stars:424242", currency="XTR",
                             total_amount=5)["telegram_payment_charge_id"]
    assert stars.settle(runtime, ALICE_TG, "stars:424242", "XTR", 5, unknown).outcome == \
        "refunded"
    assert all(p["refunded"] for p in emu_client.payments())
    assert row(engine, payment_id).status == "pending"
    assert billing.status(engine, alice).tier == "free"
    assert len(alerts(engine, "not credited")) == 2


def test_a_charge_neither_credited_nor_refundable_is_a_critical_alert(runtime, engine, alice):
    with pytest.raises(StarsError) as failed:
        stars.settle(runtime, ALICE_TG, "stars:1", "XTR", 5, "stxTunknown")
    assert failed.value.code == "refund_failed"
    assert alerts(engine, "[CRITICAL] payments stars: charge stxTunknown")


def test_refund_gives_the_stars_back_and_shortens_premium(runtime, engine, emu_client, alice):
    payment_id = stars_payment(engine, alice)
    charge_id = paid(runtime, emu_client, ALICE_TG, payment_id)
    outcome = stars.refund_stars(runtime, payment_id, "asked by the user")
    assert outcome.applied and outcome.amount_minor == PRICE
    assert [p["refunded"] for p in emu_client.payments()] == [True]
    assert row(engine, payment_id).status == "refunded"
    assert billing.status(engine, alice).tier == "free"
    with engine.connect() as conn:
        refund = conn.execute(select(PaymentRefund)).one()
    assert (refund.provider, refund.provider_refund_id, refund.reason) == (
        "stars", charge_id, "asked by the user")

    again = stars.refund_stars(runtime, payment_id, "asked twice")
    assert again.applied is False and count(engine, PaymentRefund) == 1


def test_refund_after_telegram_refunded_but_we_did_not_record_it(runtime, engine, emu_client,
                                                                 alice):
    """The first run refunded at Telegram and then failed: the rerun finishes the job."""
    payment_id = stars_payment(engine, alice)
    charge_id = paid(runtime, emu_client, ALICE_TG, payment_id)
    emu_client.bot_call("refundStarPayment", token=runtime.settings.bot_token,
                        user_id=ALICE_TG, telegram_payment_charge_id=charge_id)
    assert stars.refund_stars(runtime, payment_id, None).applied
    assert row(engine, payment_id).status == "refunded"


def test_refund_retries_a_telegram_5xx(runtime, engine, emu_client, alice):
    payment_id = stars_payment(engine, alice)
    paid(runtime, emu_client, ALICE_TG, payment_id)
    emu_client.add_fault("5xx", methods=["refundStarPayment"], count=1)
    assert stars.refund_stars(runtime, payment_id, None).applied


def test_refunds_that_cannot_be_made_change_nothing(runtime, engine, emu_client, alice):
    pending = stars_payment(engine, alice)
    yookassa_id, _ = billing.create_payment(engine, alice, "yookassa", "balance_topup", 30000,
                                            "RUB")
    foreign = stars_payment(engine, alice)
    billing.complete_payment(engine, foreign, PRICE, "XTR", "stxTnot-at-telegram")
    cases = [(999999, "unknown_payment"), (yookassa_id, "not_stars"), (pending, "not_paid"),
             (foreign, "refund_refused")]
    for payment_id, code in cases:
        with pytest.raises(StarsError) as refused:
            stars.refund_stars(runtime, payment_id, None)
        assert refused.value.code == code, payment_id
    assert count(engine, PaymentRefund) == 0
    assert row(engine, foreign).status == "succeeded"
    with engine.connect() as conn:
        assert conn.execute(select(User.tier).where(User.id == alice)).scalar_one() == "premium"


def test_invoice_is_sent_in_stars_with_our_payload(runtime, engine, emu_client, alice):
    payment_id = stars.send_invoice(runtime, alice, ALICE_TG, "year", title="Premium: 1 year",
                                    description="A year", label="Premium")
    [message] = [m for m in emu_client.messages(ALICE_TG) if m["kind"] == "invoice"]
    assert message["invoice"]["currency"] == "XTR"
    assert message["invoice"]["total_amount"] == billing.PRICES["year"]["XTR"]
    assert stars.check_checkout(engine, ALICE_TG, stars.invoice_payload(payment_id), "XTR",
                                billing.PRICES["year"]["XTR"]) == payment_id


def test_a_charge_the_bot_never_recorded_is_confirmed_with_telegram_and_credited_once(
        runtime, engine, emu_client, alice):
    """The database was down when the successful_payment arrived: the operator completes the
    charge; Telegram's transaction list is what proves it was paid."""
    payment_id = stars_payment(engine, alice)
    charge_id = charge(emu_client, ALICE_TG, payment_id)
    found = stars.find_charge(runtime, charge_id)
    assert found == stars.StarCharge(charge_id, ALICE_TG, PRICE,
                                     stars.invoice_payload(payment_id), False)
    assert stars.complete_charge(runtime, charge_id).outcome == "credited"
    assert stars.complete_charge(runtime, charge_id).outcome == "duplicate"
    assert billing.status(engine, alice).tier == "premium"
    assert row(engine, payment_id).provider_payment_id == charge_id


def test_completing_an_unknown_or_refunded_charge_changes_nothing(runtime, engine, emu_client,
                                                                  alice):
    payment_id = stars_payment(engine, alice)
    charge_id = charge(emu_client, ALICE_TG, payment_id)
    emu_client.bot_call("refundStarPayment", token=runtime.settings.bot_token,
                        user_id=ALICE_TG, telegram_payment_charge_id=charge_id)
    for unknown, code in (("stxTnever", "unknown_charge"), (charge_id, "charge_refunded")):
        with pytest.raises(StarsError) as refused:
            stars.complete_charge(runtime, unknown)
        assert refused.value.code == code
    assert row(engine, payment_id).status == "pending"
    assert billing.status(engine, alice).tier == "free"
