"""Billing core against real PostgreSQL: trial once, every payment credited exactly once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError

from habitbot.models import Balance, BalanceTransaction, Payment, Subscription, User
from habitbot.services import billing
from habitbot.services.billing import BillingError

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def alice(engine) -> int:
    with engine.begin() as conn:
        return conn.execute(insert(User).values(telegram_id=1).returning(User.id)).scalar_one()


def _count(engine, model) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def test_trial_once_per_user(engine, alice):
    assert billing.status(engine, alice, NOW).trial_available
    ends = billing.start_trial(engine, alice, NOW)
    assert ends == NOW + timedelta(days=7)
    state = billing.status(engine, alice, NOW)
    assert (state.tier, state.ends_at, state.trial_available) == ("trial", ends, False)
    with pytest.raises(BillingError, match="trial_used"):
        billing.start_trial(engine, alice, NOW + timedelta(days=30))
    assert billing.status(engine, alice, NOW + timedelta(days=8)).tier == "free"


def test_top_up_is_credited_once_with_its_transaction(engine, alice):
    payment_id, _key = billing.create_payment(engine, alice, "yookassa", "balance_topup",
                                              10000, "RUB")
    first = billing.complete_payment(engine, payment_id, 10000, "RUB", "yk-1")
    again = billing.complete_payment(engine, payment_id, 10000, "RUB", "yk-1")
    assert (first.credited, first.balance_after) == (True, 10000)
    assert (again.credited, again.status) == (False, "succeeded")
    assert billing.balance(engine, alice) == 10000
    [tx] = billing.history(engine, alice)
    assert (tx.amount_minor, tx.balance_after_minor, tx.kind, tx.payment_id) == (
        10000, 10000, "topup", payment_id)


def test_hundred_concurrent_notifications_credit_exactly_once(engine, alice):
    payment_id, _ = billing.create_payment(engine, alice, "cryptobot", "balance_topup", 500,
                                           "RUB")
    results: list[bool] = []
    lock = threading.Lock()

    def deliver() -> None:
        outcome = billing.complete_payment(engine, payment_id, 500, "RUB", "inv-1")
        with lock:
            results.append(outcome.credited)

    threads = [threading.Thread(target=deliver) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1 and len(results) == 100
    assert billing.balance(engine, alice) == 500
    assert _count(engine, BalanceTransaction) == 1


def test_wrong_amount_or_currency_changes_nothing(engine, alice):
    payment_id, _ = billing.create_payment(engine, alice, "yookassa", "balance_topup", 10000,
                                           "RUB")
    for amount, currency in ((9999, "RUB"), (10000, "USD")):
        with pytest.raises(BillingError, match="amount_mismatch"):
            billing.complete_payment(engine, payment_id, amount, currency)
    with engine.connect() as conn:
        assert conn.execute(select(Payment.status)).scalar_one() == "pending"
    assert billing.balance(engine, alice) == 0


def test_subscription_payments_extend_premium_from_its_end(engine, alice):
    first, _ = billing.create_payment(engine, alice, "stars", "subscription", 150, "XTR",
                                      plan="month")
    second, _ = billing.create_payment(engine, alice, "stars", "subscription", 150, "XTR",
                                       plan="month")
    one = billing.complete_payment(engine, first, 150, "XTR", "ch-1", now=NOW)
    two = billing.complete_payment(engine, second, 150, "XTR", "ch-2", now=NOW)
    assert one.premium_until == NOW + timedelta(days=30)
    assert two.premium_until == NOW + timedelta(days=60)
    assert billing.status(engine, alice, NOW).tier == "premium"
    assert _count(engine, Subscription) == 2


def test_buying_premium_from_the_balance(engine, alice):
    with pytest.raises(BillingError, match="insufficient_balance"):
        billing.buy_with_balance(engine, alice, "month", now=NOW)
    assert _count(engine, Payment) == 0 and _count(engine, Balance) == 0
    top_up, _ = billing.create_payment(engine, alice, "yookassa", "balance_topup", 25000,
                                       "RUB")
    billing.complete_payment(engine, top_up, 25000, "RUB")
    until = billing.buy_with_balance(engine, alice, "month", now=NOW)
    assert until == NOW + timedelta(days=30)
    assert billing.balance(engine, alice) == 25000 - 19900
    kinds = [(t.kind, t.amount_minor, t.balance_after_minor)
             for t in billing.history(engine, alice)]
    assert kinds == [("purchase", -19900, 5100), ("topup", 25000, 25000)]


def test_expiry_downgrades_the_tier_and_keeps_data(engine, alice):
    billing.start_trial(engine, alice, NOW)
    assert billing.expire_tiers(engine, NOW + timedelta(days=6)) == 0
    assert billing.expire_tiers(engine, NOW + timedelta(days=7, seconds=1)) == 1
    with engine.connect() as conn:
        tier, trial_ends = conn.execute(select(User.tier, User.trial_ends_at)).one()
    assert tier == "free" and trial_ends == NOW + timedelta(days=7)


def test_the_database_refuses_a_negative_balance(engine, alice):
    with engine.begin() as conn:
        conn.execute(insert(Balance).values(user_id=alice, currency="RUB", amount_minor=5))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE balances SET amount_minor = -1"))


def test_a_second_credit_row_for_one_payment_is_refused_by_the_schema(engine, alice):
    payment_id, _ = billing.create_payment(engine, alice, "yookassa", "balance_topup", 100,
                                           "RUB")
    billing.complete_payment(engine, payment_id, 100, "RUB")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(BalanceTransaction).values(
            user_id=alice, currency="RUB", amount_minor=100, balance_after_minor=200,
            kind="topup", payment_id=payment_id))


# ---------------------------------------------------------------- closing, failing, refunds

def _top_up(engine, user_id: int, amount: int, provider_id: str) -> int:
    payment_id, _ = billing.create_payment(engine, user_id, "yookassa", "balance_topup",
                                           amount, "RUB")
    billing.complete_payment(engine, payment_id, amount, "RUB", provider_id)
    return payment_id


def _month(engine, user_id: int, provider_id: str, now=NOW) -> int:
    payment_id, _ = billing.create_payment(engine, user_id, "yookassa", "subscription", 19900,
                                           "RUB", plan="month")
    billing.complete_payment(engine, payment_id, 19900, "RUB", provider_id, now=now)
    return payment_id


def _payment(engine, payment_id: int):
    with engine.connect() as conn:
        return conn.execute(select(Payment).where(Payment.id == payment_id)).one()


def test_a_late_cancel_after_success_changes_nothing(engine, alice):
    paid = _top_up(engine, alice, 1000, "yk-paid")
    assert billing.cancel_payment(engine, paid, "expired_on_confirmation") is False
    assert _payment(engine, paid).status == "succeeded" and billing.balance(engine, alice) == 1000
    open_id, _ = billing.create_payment(engine, alice, "yookassa", "balance_topup", 500, "RUB")
    assert billing.cancel_payment(engine, open_id, "insufficient_funds", now=NOW) is True
    row = _payment(engine, open_id)
    assert (row.status, row.failure_reason, row.canceled_at) == ("canceled",
                                                                 "insufficient_funds", NOW)
    # a late success after the cancel credits nothing
    late = billing.complete_payment(engine, open_id, 500, "RUB", "yk-late")
    assert (late.credited, late.status) == (False, "canceled")
    with pytest.raises(BillingError, match="unknown_payment"):
        billing.cancel_payment(engine, 4242)


def test_failing_a_payment_keeps_the_reason(engine, alice):
    payment_id, _ = billing.create_payment(engine, alice, "cryptobot", "balance_topup", 500,
                                           "RUB")
    assert billing.fail_payment(engine, payment_id, "cryptobot createInvoice: timeout")
    assert not billing.fail_payment(engine, payment_id, "again")
    row = _payment(engine, payment_id)
    assert (row.status, row.failure_reason) == ("failed", "cryptobot createInvoice: timeout")


def test_one_provider_payment_never_credits_two_of_ours(engine, alice):
    _top_up(engine, alice, 1000, "yk-same")
    other, _ = billing.create_payment(engine, alice, "yookassa", "balance_topup", 1000, "RUB")
    with pytest.raises(BillingError, match="provider_id_conflict"):
        billing.complete_payment(engine, other, 1000, "RUB", "yk-same")
    assert _payment(engine, other).status == "pending" and billing.balance(engine, alice) == 1000


def test_operator_reason_is_recorded_with_the_credit(engine, alice):
    payment_id, _ = billing.create_payment(engine, alice, "yookassa", "balance_topup", 700,
                                           "RUB")
    billing.complete_payment(engine, payment_id, 700, "RUB", operator_reason="bank statement",
                             now=NOW)
    data = _payment(engine, payment_id).provider_data
    assert data["operator_completion"] == {"reason": "bank statement", "at": NOW.isoformat()}


def test_top_up_refund_debits_the_balance_once(engine, alice):
    payment_id = _top_up(engine, alice, 10000, "yk-r1")
    first = billing.apply_refund(engine, payment_id, "rf-1", 3000, "customer asked")
    again = billing.apply_refund(engine, payment_id, "rf-1", 3000)
    assert (first.applied, first.debited_minor, first.shortfall_minor,
            first.balance_after) == (True, 3000, 0, 7000)
    assert (again.applied, again.refund_id) == (False, first.refund_id)
    assert billing.balance(engine, alice) == 7000
    [refund_tx, _topup] = billing.history(engine, alice)
    assert (refund_tx.kind, refund_tx.amount_minor, refund_tx.balance_after_minor,
            refund_tx.refund_id, refund_tx.payment_id) == ("refund", -3000, 7000,
                                                           first.refund_id, payment_id)
    row = _payment(engine, payment_id)
    assert (row.status, row.refunded_minor) == ("succeeded", 3000)
    second = billing.apply_refund(engine, payment_id, "rf-2", 7000)
    assert second.payment_status == "refunded" and billing.balance(engine, alice) == 0
    assert _payment(engine, payment_id).status == "refunded"


def test_refund_of_a_spent_top_up_debits_what_is_there_and_records_the_shortfall(engine,
                                                                                  alice):
    payment_id = _top_up(engine, alice, 25000, "yk-spent")
    billing.buy_with_balance(engine, alice, "month", now=NOW)  # 5100 left
    outcome = billing.apply_refund(engine, payment_id, "rf-spent", 25000)
    assert (outcome.debited_minor, outcome.shortfall_minor, outcome.balance_after) == (
        5100, 19900, 0)
    assert billing.balance(engine, alice) == 0
    [refund] = billing.refunds_of(engine, payment_id)
    assert "not debited 19900" in refund.reason
    # a replay of the same refund takes nothing more
    assert billing.apply_refund(engine, payment_id, "rf-spent", 25000).applied is False
    assert _count(engine, BalanceTransaction) == 3


def test_subscription_refund_shortens_premium_by_its_share(engine, alice):
    payment_id = _month(engine, alice, "yk-sub")
    half = billing.apply_refund(engine, payment_id, "rf-half", 9950, now=NOW)
    assert half.premium_until == NOW + timedelta(days=15)
    assert billing.status(engine, alice, NOW).ends_at == NOW + timedelta(days=15)
    rest = billing.apply_refund(engine, payment_id, "rf-rest", 9950, now=NOW)
    assert rest.payment_status == "refunded" and rest.premium_until == NOW
    with engine.connect() as conn:
        tier, sub_status = conn.execute(
            select(User.tier, Subscription.status).join(Subscription,
                                                        Subscription.user_id == User.id)).one()
    assert (tier, sub_status) == ("free", "refunded")


def test_refunding_one_of_two_months_keeps_the_other(engine, alice):
    first = _month(engine, alice, "yk-m1")
    _month(engine, alice, "yk-m2")
    outcome = billing.apply_refund(engine, first, "rf-m1", 19900, now=NOW)
    assert outcome.premium_until == NOW + timedelta(days=30)
    assert billing.status(engine, alice, NOW).tier == "premium"


@pytest.mark.parametrize("case, code", [
    ("too_much", "refund_exceeds_payment"),
    ("pending", "not_refundable"),
    ("unknown", "unknown_payment"),
    ("zero", "amount_not_positive"),
    ("other_payment", "refund_of_another_payment"),
])
def test_bad_refunds_change_nothing(engine, alice, case, code):
    paid = _top_up(engine, alice, 1000, "yk-bad")
    other = _top_up(engine, alice, 1000, "yk-other")
    billing.apply_refund(engine, other, "rf-taken", 100)
    pending, _ = billing.create_payment(engine, alice, "yookassa", "balance_topup", 1000, "RUB")
    target, refund_id, amount = {
        "too_much": (paid, "rf-x", 1001), "pending": (pending, "rf-x", 100),
        "unknown": (9999, "rf-x", 100), "zero": (paid, "rf-x", 0),
        "other_payment": (paid, "rf-taken", 100)}[case]
    with pytest.raises(BillingError) as caught:
        billing.apply_refund(engine, target, refund_id, amount)
    assert caught.value.code == code
    assert billing.balance(engine, alice) == 1900
    assert _payment(engine, paid).refunded_minor == 0


def test_concurrent_deliveries_of_one_refund_apply_it_once(engine, alice):
    payment_id = _top_up(engine, alice, 5000, "yk-conc")
    results: list[bool] = []
    lock = threading.Lock()

    def deliver() -> None:
        outcome = billing.apply_refund(engine, payment_id, "rf-conc", 5000)
        with lock:
            results.append(outcome.applied)

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1 and billing.balance(engine, alice) == 0


def test_configured_prices_and_trial_length_apply(engine, alice, monkeypatch):
    monkeypatch.setattr(billing, "PRICES", {plan: dict(p) for plan, p in billing.PRICES.items()})
    monkeypatch.setattr(billing, "TRIAL_DAYS", billing.TRIAL_DAYS)
    billing.configure({"month": {"RUB": 25000}, "year": {"RUB": 200000, "XTR": 900}}, 14)
    assert billing.price("month", "RUB") == 25000 and billing.price("year", "XTR") == 900
    with pytest.raises(billing.BillingError):
        billing.price("month", "USD")  # no longer offered
    assert billing.start_trial(engine, alice, now=NOW) == NOW + timedelta(days=14)
    with pytest.raises(ValueError):
        billing.configure({"month": {"RUB": 1}}, 7)  # a plan without prices
