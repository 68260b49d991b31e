"""Premium periods against real PostgreSQL: a paid period starts when what the user already has
ends (the trial or paid premium), whichever way it is paid; a refund removes only the refunded
period's days; payments arriving at once are all added, one after the other."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select, update

from habitbot.models import Subscription, User
from habitbot.payments import notify
from habitbot.services import billing, operator
from habitbot.services.billing import BillingError

NOW = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
# Each way a period is bought: the provider of the payment row and its currency.
PAID_WAYS = {"yookassa": "RUB", "cryptobot": "RUB", "stars": "XTR"}


@pytest.fixture
def alice(engine) -> int:
    with engine.begin() as conn:
        return conn.execute(insert(User).values(telegram_id=1).returning(User.id)).scalar_one()


@pytest.fixture
def trial_user(engine, alice) -> int:
    """Alice, who started her 7-day trial on 05.12: it runs until 12.12, four days from NOW."""
    billing.start_trial(engine, alice, NOW - 3 * DAY)
    return alice


def buy(engine, user_id: int, plan: str, way: str, now: datetime = NOW,
        provider_id: str | None = None) -> billing.Completion | datetime:
    """A plan bought one way, credited as the provider's notification would."""
    if way == "balance":
        top_up, _ = billing.create_payment(engine, user_id, "yookassa", "balance_topup",
                                           billing.price(plan, "RUB"), "RUB")
        billing.complete_payment(engine, top_up, billing.price(plan, "RUB"), "RUB", now=now)
        return billing.buy_with_balance(engine, user_id, plan, now=now)
    currency = PAID_WAYS[way]
    amount = billing.price(plan, currency)
    payment_id, _ = billing.create_payment(engine, user_id, way, "subscription", amount,
                                           currency, plan=plan)
    return billing.complete_payment(engine, payment_id, amount, currency,
                                    provider_id or f"{way}-{payment_id}", now=now)


def premium_until(engine, user_id: int) -> datetime:
    with engine.connect() as conn:
        return conn.execute(select(User.premium_ends_at).where(User.id == user_id)).scalar_one()


def user_row(engine, user_id: int):
    with engine.connect() as conn:
        return conn.execute(select(User.tier, User.trial_started_at, User.trial_ends_at,
                                   User.premium_ends_at).where(User.id == user_id)).one()


def periods(engine, user_id: int) -> list[tuple[str, str, datetime, datetime]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(Subscription.plan, Subscription.status, Subscription.starts_at,
                   Subscription.ends_at).where(Subscription.user_id == user_id)
            .order_by(Subscription.starts_at, Subscription.id))]


def month_payment(engine, user_id: int, now: datetime = NOW) -> int:
    payment_id, _ = billing.create_payment(engine, user_id, "cryptobot", "subscription", 19900,
                                           "RUB", plan="month")
    billing.complete_payment(engine, payment_id, 19900, "RUB", f"inv-{payment_id}", now=now)
    return payment_id


# ---------------------------------------------------------------- buying during the trial

@pytest.mark.parametrize("way", [*PAID_WAYS, "balance"])
@pytest.mark.parametrize("plan", ["month", "year"])
def test_a_plan_bought_during_the_trial_starts_when_the_trial_ends(engine, trial_user, plan,
                                                                   way):
    trial_end = NOW + 4 * DAY
    buy(engine, trial_user, plan, way)
    expected = trial_end + timedelta(days=billing.PLAN_DAYS[plan])
    assert premium_until(engine, trial_user) == expected
    state = billing.status(engine, trial_user, NOW)
    assert (state.tier, state.ends_at) == ("premium", expected)
    assert periods(engine, trial_user) == [
        ("trial", "active", NOW - 3 * DAY, trial_end),
        (plan, "active", trial_end, expected)]
    row = user_row(engine, trial_user)
    assert (row.tier, row.trial_ends_at) == ("premium", trial_end)  # the trial is untouched


def test_a_replayed_notification_during_the_trial_adds_the_month_once(engine, trial_user):
    payment_id, _ = billing.create_payment(engine, trial_user, "cryptobot", "subscription",
                                           19900, "RUB", plan="month")
    first = billing.complete_payment(engine, payment_id, 19900, "RUB", "inv-1", now=NOW)
    again = billing.complete_payment(engine, payment_id, 19900, "RUB", "inv-1",
                                     now=NOW + DAY)
    assert first.premium_until == NOW + 34 * DAY
    assert (again.credited, premium_until(engine, trial_user)) == (False, NOW + 34 * DAY)


def test_the_next_period_is_known_before_paying(engine, alice):
    assert billing.next_period(engine, alice, "month", NOW) == (NOW, NOW + 30 * DAY)
    billing.start_trial(engine, alice, NOW - 3 * DAY)
    assert billing.next_period(engine, alice, "year", NOW) == (NOW + 4 * DAY,
                                                               NOW + 369 * DAY)
    until = buy(engine, alice, "month", "balance")
    assert billing.next_period(engine, alice, "month", NOW) == (until, until + 30 * DAY)
    assert len(periods(engine, alice)) == 2


# ---------------------------------------------------------------- refunds

def test_a_full_refund_of_a_month_bought_during_the_trial_keeps_the_trial(engine,
                                                                          trial_user):
    payment_id = month_payment(engine, trial_user)
    outcome = billing.apply_refund(engine, payment_id, "rf-1", 19900, now=NOW + DAY)
    state = billing.status(engine, trial_user, NOW + DAY)
    assert (state.tier, state.ends_at) == ("trial", NOW + 4 * DAY)
    row = user_row(engine, trial_user)
    assert (row.tier, row.trial_ends_at) == ("trial", NOW + 4 * DAY)
    assert row.premium_ends_at <= NOW + DAY and outcome.premium_until == row.premium_ends_at
    # Premium access (the trial) continues to its end, then nothing.
    assert billing.status(engine, trial_user, NOW + 4 * DAY).tier == "free"


def test_the_refund_notice_says_the_trial_goes_on(runtime, engine, alice):
    """Told at the real time of the refund (the refund row's own clock)."""
    now = datetime.now(UTC)
    trial_end = billing.start_trial(engine, alice, now - 3 * DAY)
    payment_id = month_payment(engine, alice, now=now)
    outcome = billing.apply_refund(engine, payment_id, "rf-1", 19900, now=now)
    _chat, text = notify.refund_text(runtime, outcome.refund_id)
    day = trial_end.astimezone(ZoneInfo("Europe/Moscow")).strftime("%d.%m.%Y")  # her zone
    assert text == f"↩️ Возврат 199.00 ₽ за премиум. Теперь премиум действует до {day}."


def test_a_partial_refund_removes_only_its_share_of_the_paid_days(engine, trial_user):
    payment_id = month_payment(engine, trial_user)
    outcome = billing.apply_refund(engine, payment_id, "rf-half", 9950, now=NOW + DAY)
    assert outcome.premium_until == NOW + 4 * DAY + 15 * DAY
    again = billing.apply_refund(engine, payment_id, "rf-half", 9950, now=NOW + 2 * DAY)
    assert again.applied is False
    assert premium_until(engine, trial_user) == NOW + 19 * DAY
    assert user_row(engine, trial_user).trial_ends_at == NOW + 4 * DAY


def test_refunding_the_first_of_two_stacked_months_moves_the_second_up(engine, trial_user):
    first = month_payment(engine, trial_user)
    month_payment(engine, trial_user)
    billing.apply_refund(engine, first, "rf-first", 19900, now=NOW)
    assert premium_until(engine, trial_user) == NOW + 34 * DAY
    active = [p for p in periods(engine, trial_user) if p[1] == "active"]
    assert active == [("trial", "active", NOW - 3 * DAY, NOW + 4 * DAY),
                      ("month", "active", NOW + 4 * DAY, NOW + 34 * DAY)]


def test_a_refund_in_the_middle_of_a_used_month_takes_the_rest_from_later_paid_days(
        engine, alice):
    first = month_payment(engine, alice, now=NOW)
    month_payment(engine, alice, now=NOW)  # premium until NOW + 60 d
    billing.apply_refund(engine, first, "rf-used", 19900, now=NOW + 10 * DAY)
    # 30 paid days removed: the 20 left of the first month and 10 of the second.
    assert premium_until(engine, alice) == NOW + 30 * DAY
    assert billing.status(engine, alice, NOW + 10 * DAY).tier == "premium"


# ---------------------------------------------------------------- at once, expired, running

def test_payments_arriving_at_once_are_all_added_in_order(engine, trial_user):
    ways = ["yookassa", "cryptobot", "stars", "balance", "cryptobot", "yookassa"]
    start = threading.Barrier(len(ways))
    errors: list[Exception] = []

    def deliver(way: str) -> None:
        try:
            start.wait(timeout=10)
            buy(engine, trial_user, "month", way)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(way,)) for way in ways]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    trial_end = NOW + 4 * DAY
    assert premium_until(engine, trial_user) == trial_end + 30 * DAY * len(ways)
    paid = [p for p in periods(engine, trial_user) if p[0] == "month"]
    assert len(paid) == len(ways)
    assert paid[0][2] == trial_end
    for earlier, later in zip(paid, paid[1:], strict=False):
        assert later[2] == earlier[3]  # one after the other: no overlap, no gap


def test_a_refund_and_a_new_payment_at_once_leave_exactly_the_new_month(engine, trial_user):
    refunded = month_payment(engine, trial_user)
    start = threading.Barrier(2)
    errors: list[Exception] = []

    def run(action) -> None:
        try:
            start.wait(timeout=10)
            action()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(action,)) for action in (
        lambda: billing.apply_refund(engine, refunded, "rf-at-once", 19900, now=NOW),
        lambda: buy(engine, trial_user, "month", "yookassa"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    trial_end = NOW + 4 * DAY
    assert premium_until(engine, trial_user) == trial_end + 30 * DAY  # whichever came first
    active = [p for p in periods(engine, trial_user) if p[1] == "active"]
    assert active == [("trial", "active", NOW - 3 * DAY, trial_end),
                      ("month", "active", trial_end, trial_end + 30 * DAY)]


def test_an_unknown_plan_has_no_next_period(engine, alice):
    with pytest.raises(BillingError) as caught:
        billing.next_period(engine, alice, "decade", NOW)
    assert caught.value.code == "unknown_plan"


def test_a_payment_after_premium_expired_starts_now(engine, alice):
    billing.start_trial(engine, alice, NOW - 60 * DAY)  # over long ago
    month_payment(engine, alice, now=NOW - 40 * DAY)  # ended 10 days ago
    later = buy(engine, alice, "month", "stars")
    assert later.premium_until == NOW + 30 * DAY
    assert buy(engine, alice, "year", "cryptobot").premium_until == NOW + 395 * DAY


def test_paid_premium_still_running_plus_a_month_ends_thirty_days_after_it(engine, alice):
    month_payment(engine, alice, now=NOW - 10 * DAY)  # until NOW + 20 d
    assert buy(engine, alice, "month", "yookassa").premium_until == NOW + 50 * DAY
    assert buy(engine, alice, "month", "balance") == NOW + 80 * DAY


# ---------------------------------------------------------------- the trial after paid days

def test_a_trial_started_during_paid_premium_follows_it(engine, alice):
    month_payment(engine, alice, now=NOW - 10 * DAY)  # until NOW + 20 d
    ends = billing.start_trial(engine, alice, NOW)
    assert ends == NOW + 27 * DAY
    row = user_row(engine, alice)
    assert (row.tier, row.trial_started_at, row.trial_ends_at, row.premium_ends_at) == (
        "premium", NOW + 20 * DAY, NOW + 27 * DAY, NOW + 20 * DAY)
    state = billing.status(engine, alice, NOW)
    assert (state.tier, state.ends_at, state.trial_available) == ("trial", ends, False)
    # Once the paid days are over the tier column says trial; a month bought then comes
    # after the trial.
    assert billing.expire_tiers(engine, NOW + 21 * DAY) == 1
    assert user_row(engine, alice).tier == "trial"
    later = buy(engine, alice, "month", "cryptobot", now=NOW + 21 * DAY)
    assert later.premium_until == NOW + 57 * DAY
    assert billing.expire_tiers(engine, NOW + 22 * DAY) == 0


def test_refunding_paid_days_before_a_trial_moves_the_trial_up(engine, alice):
    payment_id = month_payment(engine, alice, now=NOW)  # until NOW + 30 d
    billing.start_trial(engine, alice, NOW + DAY)  # NOW + 30 d .. NOW + 37 d
    billing.apply_refund(engine, payment_id, "rf-1", 9950, now=NOW + DAY)  # 15 days back
    row = user_row(engine, alice)
    assert (row.premium_ends_at, row.trial_started_at, row.trial_ends_at) == (
        NOW + 15 * DAY, NOW + 15 * DAY, NOW + 22 * DAY)
    assert periods(engine, alice)[1] == ("trial", "active", NOW + 15 * DAY, NOW + 22 * DAY)
    billing.apply_refund(engine, payment_id, "rf-2", 9950, now=NOW + 2 * DAY)
    row = user_row(engine, alice)
    assert (row.tier, row.trial_started_at, row.trial_ends_at) == (
        "trial", NOW + 2 * DAY, NOW + 9 * DAY)
    state = billing.status(engine, alice, NOW + 2 * DAY)
    assert (state.tier, state.ends_at) == ("trial", NOW + 9 * DAY)


def test_operator_counts_a_trial_that_has_not_begun_as_premium_only(engine, alice):
    month_payment(engine, alice, now=NOW)
    billing.start_trial(engine, alice, NOW)
    counts = operator.system_counts(engine, NOW + DAY)
    assert (counts["users premium"], counts["users on trial"]) == (1, 0)
    counts = operator.system_counts(engine, NOW + 31 * DAY)
    assert (counts["users premium"], counts["users on trial"]) == (0, 1)


def test_status_of_a_user_whose_premium_was_set_by_hand(engine, alice):
    """Rows written before subscriptions existed (or by hand) still read and extend."""
    with engine.begin() as conn:
        conn.execute(update(User).where(User.id == alice).values(
            tier="premium", premium_ends_at=NOW + 5 * DAY))
    assert billing.status(engine, alice, NOW).ends_at == NOW + 5 * DAY
    assert buy(engine, alice, "month", "yookassa").premium_until == NOW + 35 * DAY
