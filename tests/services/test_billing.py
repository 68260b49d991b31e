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
