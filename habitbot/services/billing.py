"""Premium, trial, balance and the one way a payment is credited: exactly once.

`complete_payment` moves a payment from a non-final status to `succeeded` with a conditional
UPDATE and, in the same transaction, credits the balance (with its `balance_transactions` row
and the balance after it) or extends premium (with a `subscriptions` row keyed by the payment).
A duplicate, a replay, a concurrent second delivery or a "check payment" button racing the
webhook finds the payment already final and changes nothing. Amounts are integer minor units.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import (
    Connection,
    Engine,
    String,
    Table,
    Uuid,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from habitbot.models import (
    Balance,
    BalanceTransaction,
    Payment,
    PaymentRefund,
    Subscription,
    User,
)

log = logging.getLogger(__name__)

TRIAL_DAYS = 7
PLAN_DAYS = {"month": 30, "year": 365}
# Prices in minor units per currency (kopecks, cents; whole stars for XTR).
PRICES: dict[str, dict[str, int]] = {
    "month": {"RUB": 19900, "USD": 299, "XTR": 150},
    "year": {"RUB": 149000, "USD": 2299, "XTR": 1100},
}
OPEN_STATUSES = ("pending", "waiting_for_capture")

# The crediting statements are built once: a webhook burst spends its time in the database,
# not in building SQL. Table-level (not ORM) statements, parameters bound per call.
_payments = cast(Table, Payment.__table__)
_balances = cast(Table, Balance.__table__)
_CLAIM = (
    update(_payments)
    .where(_payments.c.id == bindparam("p_payment_id"),
           _payments.c.status.in_(OPEN_STATUSES),
           _payments.c.amount_minor == bindparam("p_amount_minor"),
           _payments.c.currency == bindparam("p_currency"),
           or_(bindparam("p_provider", type_=String) == None,  # noqa: E711
               _payments.c.provider == bindparam("p_provider", type_=String)),
           or_(bindparam("p_provider_payment_id", type_=String) == None,  # noqa: E711
               _payments.c.provider_payment_id.is_(None),
               _payments.c.provider_payment_id == bindparam("p_provider_payment_id",
                                                            type_=String)),
           or_(bindparam("p_key", type_=Uuid) == None,  # noqa: E711
               _payments.c.idempotence_key == bindparam("p_key", type_=Uuid)))
    .values(status="succeeded", completed_at=bindparam("p_now"),
            provider_payment_id=func.coalesce(_payments.c.provider_payment_id,
                                              bindparam("p_provider_payment_id", type_=String)))
    .returning(_payments.c.user_id, _payments.c.provider, _payments.c.payment_type,
               _payments.c.plan, _payments.c.provider_data))
_CREDIT = (
    insert(_balances)
    .values(user_id=bindparam("p_user_id"), currency=bindparam("p_currency"),
            amount_minor=bindparam("p_delta"))
    .on_conflict_do_update(index_elements=[_balances.c.user_id, _balances.c.currency],
                           set_={"amount_minor": _balances.c.amount_minor
                                 + bindparam("p_delta"), "updated_at": func.now()})
    .returning(_balances.c.amount_minor))
_RECORD = insert(cast(Table, BalanceTransaction.__table__)).values(
    user_id=bindparam("p_user_id"), currency=bindparam("p_currency"),
    amount_minor=bindparam("p_delta"), balance_after_minor=bindparam("p_after"),
    kind=bindparam("p_kind"), payment_id=bindparam("p_payment_id"),
    description=bindparam("p_description"))


class BillingError(ValueError):
    def __init__(self, code: str, **params: object):
        super().__init__(code)
        self.code = code
        self.params = params


@dataclass(frozen=True)
class PremiumStatus:
    tier: str  # free | trial | premium
    ends_at: datetime | None
    trial_available: bool


@dataclass(frozen=True)
class Completion:
    payment_id: int
    credited: bool  # False: it was already final (a duplicate changes nothing)
    status: str
    balance_after: int | None = None
    premium_until: datetime | None = None


@dataclass(frozen=True)
class RefundOutcome:
    """What one provider refund did. `applied` is False for a replay of a refund already
    applied (nothing changed). `shortfall_minor` > 0: the user had already spent part of the
    refunded top-up, only `debited_minor` could be taken back — the caller alerts an operator."""

    refund_id: int
    payment_id: int
    user_id: int
    applied: bool
    amount_minor: int
    currency: str
    payment_type: str
    payment_status: str
    debited_minor: int = 0
    shortfall_minor: int = 0
    balance_after: int | None = None
    premium_until: datetime | None = None


def price(plan: str, currency: str) -> int:
    try:
        return PRICES[plan][currency]
    except KeyError:
        raise BillingError("no_price", plan=plan, currency=currency) from None


def status(engine: Engine, user_id: int, now: datetime | None = None) -> PremiumStatus:
    """What the user has: premium access ends when the later of the paid days and the trial
    ends, and the tier is named by the one that ends last (as the expiry notices are)."""
    now = now or datetime.now(UTC)
    with Session(engine) as session:
        user = session.execute(select(User.premium_ends_at, User.trial_ends_at,
                                      User.trial_started_at).where(User.id == user_id)).one()
        trial_used = user.trial_started_at is not None or session.execute(
            select(Subscription.id).where(Subscription.user_id == user_id,
                                          Subscription.plan == "trial")).first() is not None
    ends = _access_end(user.premium_ends_at, user.trial_ends_at, now)
    if ends == now:
        return PremiumStatus("free", None, not trial_used)
    if ends == user.premium_ends_at:
        return PremiumStatus("premium", ends, not trial_used)
    return PremiumStatus("trial", ends, False)


def _access_end(premium_ends_at: datetime | None, trial_ends_at: datetime | None,
                now: datetime) -> datetime:
    """When what the user already has ends (paid days or the trial), `now` if nothing runs:
    a new period, paid or the trial, starts there, so no day already given is lost."""
    return max(t for t in (now, premium_ends_at, trial_ends_at) if t is not None)


def next_period(engine: Engine, user_id: int, plan: str,
                now: datetime | None = None) -> tuple[datetime, datetime]:
    """(start, end) of the period `plan` would add if it were paid now: shown before paying.
    The credit computes it again under the user's row lock."""
    if plan not in PLAN_DAYS:
        raise BillingError("unknown_plan", plan=plan)
    now = now or datetime.now(UTC)
    with Session(engine) as session:
        user = session.execute(select(User.premium_ends_at, User.trial_ends_at)
                               .where(User.id == user_id)).one()
    start = _access_end(user.premium_ends_at, user.trial_ends_at, now)
    return start, start + timedelta(days=PLAN_DAYS[plan])


# Told after a credit or a refund is committed (provider, payment type): the process's metrics.
Observer = Callable[[str, str], None]
_on_credited: Observer | None = None
_on_refunded: Observer | None = None


def configure(prices: dict[str, dict[str, int]], trial_days: int,
              on_credited: Observer | None = None, on_refunded: Observer | None = None
              ) -> None:
    """Prices and the trial length from the settings (PRICE_MONTH, PRICE_YEAR, TRIAL_DAYS),
    and who to tell about credits and refunds; every process calls this once at start
    (build_runtime)."""
    global TRIAL_DAYS, _on_credited, _on_refunded
    _on_credited, _on_refunded = on_credited, on_refunded
    for plan in PLAN_DAYS:
        if not prices.get(plan):
            raise ValueError(f"no prices for {plan}")
    PRICES.clear()
    PRICES.update({plan: dict(prices[plan]) for plan in PLAN_DAYS})
    TRIAL_DAYS = trial_days


def start_trial(engine: Engine, user_id: int, now: datetime | None = None,
                days: int | None = None) -> datetime:
    """Once per user (a unique index refuses a second trial). Started while paid premium
    runs, the trial follows the paid days (`trial_started_at` is when its days begin)."""
    now = now or datetime.now(UTC)
    try:
        with Session(engine) as session, session.begin():
            paid_until = session.execute(select(User.premium_ends_at).where(
                User.id == user_id).with_for_update()).scalar()
            paid = paid_until is not None and paid_until > now
            starts = paid_until if paid and paid_until else now
            ends = starts + timedelta(days=days or TRIAL_DAYS)
            session.add(Subscription(user_id=user_id, plan="trial", source="trial",
                                     starts_at=starts, ends_at=ends))
            session.flush()
            session.execute(update(User).where(User.id == user_id).values(
                tier="premium" if paid else "trial", trial_started_at=starts,
                trial_ends_at=ends))
    except IntegrityError:
        raise BillingError("trial_used") from None
    return ends


def balance(engine: Engine, user_id: int, currency: str = "RUB") -> int:
    with Session(engine) as session:
        amount = session.execute(select(Balance.amount_minor).where(
            Balance.user_id == user_id, Balance.currency == currency)).scalar()
    return int(amount or 0)


def history(engine: Engine, user_id: int, limit: int = 10) -> list[BalanceTransaction]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.execute(select(BalanceTransaction)
                                    .where(BalanceTransaction.user_id == user_id)
                                    .order_by(BalanceTransaction.id.desc()).limit(limit))
                    .scalars())


def _change_balance(conn: Session | Connection, user_id: int, currency: str, delta: int,
                    kind: str, payment_id: int | None, description: str) -> int:
    """The balance row and its transaction row, in the caller's transaction."""
    if delta > 0:
        # A credit cannot go negative: one upsert locks, adds and returns the new amount.
        after = conn.execute(_CREDIT, {"p_user_id": user_id, "p_currency": currency,
                                       "p_delta": delta}).scalar_one()
    else:
        conn.execute(insert(Balance).values(user_id=user_id, currency=currency,
                                            amount_minor=0).on_conflict_do_nothing())
        current = conn.execute(select(Balance.amount_minor).where(
            Balance.user_id == user_id, Balance.currency == currency)
            .with_for_update()).scalar_one()
        after = current + delta
        if after < 0:
            raise BillingError("insufficient_balance", missing=-after)
        conn.execute(update(Balance).where(Balance.user_id == user_id,
                                           Balance.currency == currency)
                     .values(amount_minor=after))
    conn.execute(_RECORD, {"p_user_id": user_id, "p_currency": currency, "p_delta": delta,
                           "p_after": after, "p_kind": kind, "p_payment_id": payment_id,
                           "p_description": description[:255]})
    return int(after)


def _extend_premium(conn: Session | Connection, user_id: int, plan: str, source: str,
                    payment_id: int | None, now: datetime) -> datetime:
    """Add the plan's days after what the user already has (the trial's days or paid ones),
    in the caller's transaction. The user's row lock orders concurrent credits: each period
    starts where the one committed before it ends."""
    row = conn.execute(select(User.premium_ends_at, User.trial_ends_at)
                       .where(User.id == user_id).with_for_update()).one()
    start = _access_end(row.premium_ends_at, row.trial_ends_at, now)
    ends = start + timedelta(days=PLAN_DAYS[plan])
    conn.execute(insert(Subscription).values(user_id=user_id, plan=plan, source=source,
                                             payment_id=payment_id, starts_at=start,
                                             ends_at=ends))
    conn.execute(update(User).where(User.id == user_id).values(
        tier="premium", premium_ends_at=ends))
    return ends


def create_payment(engine: Engine, user_id: int, provider: str, payment_type: str,
                   amount_minor: int, currency: str, plan: str | None = None,
                   description: str | None = None) -> tuple[int, uuid.UUID]:
    """A pending payment with our own idempotence key (reused on every retry)."""
    if amount_minor <= 0:
        raise BillingError("amount_not_positive")
    with Session(engine) as session, session.begin():
        payment = Payment(user_id=user_id, provider=provider, payment_type=payment_type,
                          amount_minor=amount_minor, currency=currency, plan=plan,
                          description=description, idempotence_key=uuid.uuid4())
        session.add(payment)
        session.flush()
        return payment.id, payment.idempotence_key


def complete_payment(engine: Engine, payment_id: int, amount_minor: int, currency: str,
                     provider_payment_id: str | None = None,
                     now: datetime | None = None,
                     operator_reason: str | None = None,
                     provider: str | None = None,
                     idempotence_key: uuid.UUID | None = None) -> Completion:
    """Credit a verified payment exactly once. The caller passes what the provider says was
    paid; a mismatch with our row is refused and nothing changes: `amount_mismatch`,
    `wrong_provider` (with `provider`: the row belongs to another provider),
    `key_mismatch` (with `idempotence_key`: the row with this id is another payment — ids
    restart after a database restore), `provider_id_mismatch` (our open row already names
    another provider payment), `provider_id_conflict` (the provider id already belongs to
    another payment of ours: one provider payment never credits two). `operator_reason`
    records why an operator credited a payment the provider did not confirm
    (`payments complete --force`)."""
    try:
        return _complete(engine, payment_id, amount_minor, currency, provider_payment_id,
                         now or datetime.now(UTC), operator_reason, provider, idempotence_key)
    except IntegrityError:
        log.error("provider payment id already belongs to another payment",
                  extra={"payment_id": payment_id, "provider_payment_id": provider_payment_id})
        raise BillingError("provider_id_conflict") from None


def _complete(engine: Engine, payment_id: int, amount_minor: int, currency: str,
              provider_payment_id: str | None, now: datetime, operator_reason: str | None,
              provider: str | None, key: uuid.UUID | None) -> Completion:
    # One conditional UPDATE claims the payment: it matches only while the payment is open
    # and agrees with what the provider reported. A concurrent second delivery waits on the
    # row lock, then finds the payment final and matches nothing.
    with engine.begin() as conn:
        row = conn.execute(_CLAIM, {
            "p_payment_id": payment_id, "p_amount_minor": amount_minor,
            "p_currency": currency, "p_provider": provider,
            "p_provider_payment_id": provider_payment_id or None, "p_now": now,
            "p_key": key}).first()
        if row is None:
            return _not_claimed(conn, payment_id, amount_minor, currency, provider,
                                provider_payment_id, key)
        if operator_reason:
            conn.execute(update(Payment).where(Payment.id == payment_id).values(
                provider_data={**(row.provider_data or {}), "operator_completion": {
                    "reason": operator_reason[:500], "at": now.isoformat()}}))
        balance_after = premium_until = None
        if row.payment_type == "balance_topup":
            balance_after = _change_balance(conn, row.user_id, currency, amount_minor,
                                            "topup", payment_id, f"top-up via {row.provider}")
        else:
            assert row.plan is not None
            premium_until = _extend_premium(conn, row.user_id, row.plan, "payment",
                                            payment_id, now)
    log.info("Payment completed", extra={"payment_id": payment_id,
                                         "payment_type": row.payment_type})
    _observe(_on_credited, row.provider, row.payment_type)
    return Completion(payment_id, True, "succeeded", balance_after, premium_until)


def _not_claimed(conn: Connection, payment_id: int, amount_minor: int, currency: str,
                 provider: str | None, provider_payment_id: str | None,
                 key: uuid.UUID | None) -> Completion:
    """Why the claim matched nothing: a refusal (BillingError), or already final."""
    row = conn.execute(select(Payment.provider, Payment.provider_payment_id, Payment.status,
                              Payment.amount_minor, Payment.currency, Payment.idempotence_key)
                       .where(Payment.id == payment_id)).first()
    if row is None:
        raise BillingError("unknown_payment")
    if key is not None and row.idempotence_key != key:
        raise BillingError("key_mismatch")
    if provider is not None and row.provider != provider:
        raise BillingError("wrong_provider", provider=row.provider)
    if row.amount_minor != amount_minor or row.currency != currency:
        raise BillingError("amount_mismatch", amount_minor=row.amount_minor,
                           currency=row.currency)
    if row.status not in OPEN_STATUSES:
        log.info(f"Idempotent: payment {payment_id} already completed",
                 extra={"payment_id": payment_id, "status": row.status})
        return Completion(payment_id, False, row.status)
    raise BillingError("provider_id_mismatch", ours=row.provider_payment_id,
                       theirs=provider_payment_id)


def get_payment(engine: Engine, payment_id: int) -> Payment | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Payment, payment_id)


def find_payment(engine: Engine, provider: str, provider_payment_id: str) -> Payment | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.execute(select(Payment).where(
            Payment.provider == provider,
            Payment.provider_payment_id == provider_payment_id)).scalars().first()


def find_payment_by_key(engine: Engine, key: uuid.UUID) -> Payment | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.execute(select(Payment).where(
            Payment.idempotence_key == key)).scalars().first()


@dataclass(frozen=True)
class Restored:
    payment: Payment
    created: bool  # False: a row with this key was already there
    user_created: bool


def restore_payment(engine: Engine, *, key: uuid.UUID, telegram_id: int, provider: str,
                    provider_payment_id: str, payment_type: str, plan: str | None,
                    amount_minor: int, currency: str, description: str | None,
                    created_at: datetime | None) -> Restored:
    """Re-create, from the provider's record, a payment row our database lost (a restore
    from a backup older than the payment). The row is `pending` with the original
    idempotence key; crediting it is `complete_payment`'s business, exactly once as always.
    A user the restore lost too is re-created with defaults (their settings come back when
    they write to the bot). A row that already carries the key is returned unchanged."""
    if amount_minor <= 0:
        raise BillingError("amount_not_positive")
    if (payment_type == "subscription") != (plan is not None):
        raise BillingError("unknown_plan", plan=plan)
    with engine.begin() as conn:
        user_id = conn.execute(select(User.id).where(User.telegram_id == telegram_id)).scalar()
        user_created = user_id is None
        if user_id is None:
            user_id = conn.execute(insert(User).values(telegram_id=telegram_id)
                                   .on_conflict_do_update(index_elements=[User.telegram_id],
                                                          set_={"telegram_id": telegram_id})
                                   .returning(User.id)).scalar_one()
        values: dict[str, object] = {
            "user_id": user_id, "provider": provider, "payment_type": payment_type,
            "plan": plan, "amount_minor": amount_minor, "currency": currency,
            "description": description and description[:255], "idempotence_key": key,
            "provider_payment_id": provider_payment_id,
            "provider_data": {"restored_from_provider": datetime.now(UTC).isoformat()}}
        if created_at is not None:
            values["created_at"] = created_at
        try:
            with conn.begin_nested():
                new_id = conn.execute(insert(Payment).values(**values)
                                      .on_conflict_do_nothing(index_elements=["idempotence_key"])
                                      .returning(Payment.id)).scalar()
        except IntegrityError:  # the provider id is on another row of ours
            raise BillingError("provider_id_conflict") from None
    row = find_payment_by_key(engine, key)
    if row is None:
        raise BillingError("unknown_payment")
    if new_id is not None:
        log.warning("Payment restored from the provider's record", extra={
            "payment_id": row.id, "provider": provider,
            "provider_payment_id": provider_payment_id})
    return Restored(row, new_id is not None, user_created and new_id is not None)


def refunds_of(engine: Engine, payment_id: int) -> list[PaymentRefund]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.execute(select(PaymentRefund).where(
            PaymentRefund.payment_id == payment_id).order_by(PaymentRefund.id)).scalars())


def attach_provider_payment(engine: Engine, payment_id: int, provider_payment_id: str,
                            confirmation_url: str | None = None,
                            provider_data: dict | None = None) -> None:
    """The provider's id and pay link of a payment we just created there."""
    values: dict[str, object] = {"provider_payment_id": provider_payment_id,
                                 "confirmation_url": confirmation_url}
    if provider_data is not None:
        values["provider_data"] = provider_data
    try:
        with Session(engine) as session, session.begin():
            session.execute(update(Payment).where(Payment.id == payment_id).values(**values))
    except IntegrityError:
        raise BillingError("provider_id_conflict") from None


def _close_open(engine: Engine, payment_id: int, status: str, reason: str | None,
                now: datetime) -> bool:
    values: dict[str, object] = {"status": status, "failure_reason": reason}
    if status == "canceled":
        values["canceled_at"] = now
    current: str | None = None
    with Session(engine) as session, session.begin():
        closed = session.execute(update(Payment).where(
            Payment.id == payment_id, Payment.status.in_(OPEN_STATUSES))
            .values(**values).returning(Payment.id)).first()
        if closed is None:
            current = session.execute(select(Payment.status).where(
                Payment.id == payment_id)).scalar()
    if closed is None:
        if current is None:
            raise BillingError("unknown_payment")
        log.info(f"Payment {payment_id} is already {current}: {status} changes nothing",
                 extra={"payment_id": payment_id, "status": current, "ignored": status})
        return False
    log.info(f"Payment {status}", extra={"payment_id": payment_id, "reason": reason})
    return True


def fail_payment(engine: Engine, payment_id: int, reason: str,
                 now: datetime | None = None) -> bool:
    """An open payment could not be created at the provider: `failed`, the user may retry.
    False (nothing changed) when the payment is already final."""
    return _close_open(engine, payment_id, "failed", reason[:1000], now or datetime.now(UTC))


def cancel_payment(engine: Engine, payment_id: int, reason: str | None = None,
                   now: datetime | None = None) -> bool:
    """The provider canceled (or the invoice expired): `canceled`. A late cancel of a payment
    already succeeded (an out-of-order notification) changes nothing and returns False."""
    return _close_open(engine, payment_id, "canceled", reason, now or datetime.now(UTC))


def mark_waiting_for_capture(engine: Engine, payment_id: int) -> bool:
    with Session(engine) as session, session.begin():
        return session.execute(update(Payment).where(
            Payment.id == payment_id, Payment.status == "pending")
            .values(status="waiting_for_capture").returning(Payment.id)).first() is not None


def apply_refund(engine: Engine, payment_id: int, provider_refund_id: str, amount_minor: int,
                 reason: str | None = None, now: datetime | None = None) -> RefundOutcome:
    """Apply a refund the provider made, exactly once per provider refund id.

    A top-up refund debits the balance (a `refund` transaction linked to the refund row); if
    the user already spent part of it, what is there is debited and the rest is recorded as
    the shortfall. A subscription refund shortens premium by the refunded share of that
    subscription's period (the subscription is marked refunded once fully refunded). When
    the whole amount is refunded the payment becomes `refunded`.
    """
    now = now or datetime.now(UTC)
    if amount_minor <= 0:
        raise BillingError("amount_not_positive")
    try:
        return _apply_refund(engine, payment_id, provider_refund_id, amount_minor, reason, now)
    except IntegrityError:
        # A concurrent delivery of the same refund inserted it first: a replay.
        existing = _existing_refund(engine, payment_id, provider_refund_id)
        if existing is None:
            raise
        return existing


def _existing_refund(engine: Engine, payment_id: int,
                     provider_refund_id: str) -> RefundOutcome | None:
    with Session(engine) as session:
        row = session.execute(select(Payment).where(Payment.id == payment_id)).scalars().first()
        if row is None:
            raise BillingError("unknown_payment")
        refund = session.execute(select(PaymentRefund).where(
            PaymentRefund.provider == row.provider,
            PaymentRefund.provider_refund_id == provider_refund_id)).scalars().first()
        if refund is None:
            return None
        if refund.payment_id != payment_id:
            raise BillingError("refund_of_another_payment")
        log.info(f"Idempotent: refund {provider_refund_id} already applied",
                 extra={"payment_id": payment_id, "refund_id": refund.id})
        return RefundOutcome(refund.id, payment_id, row.user_id, False, refund.amount_minor,
                             row.currency, row.payment_type, row.status)


def _apply_refund(engine: Engine, payment_id: int, provider_refund_id: str, amount_minor: int,
                  reason: str | None, now: datetime) -> RefundOutcome:
    with Session(engine) as session, session.begin():
        row = session.execute(select(Payment).where(Payment.id == payment_id)
                              .with_for_update()).scalars().first()
        if row is None:
            raise BillingError("unknown_payment")
        provider_of_refund = row.provider
        replay = session.execute(select(PaymentRefund).where(
            PaymentRefund.provider == row.provider,
            PaymentRefund.provider_refund_id == provider_refund_id)).scalars().first()
        if replay is not None:
            if replay.payment_id != payment_id:
                raise BillingError("refund_of_another_payment")
            log.info(f"Idempotent: refund {provider_refund_id} already applied",
                     extra={"payment_id": payment_id, "refund_id": replay.id})
            return RefundOutcome(replay.id, payment_id, row.user_id, False,
                                 replay.amount_minor, row.currency, row.payment_type,
                                 row.status)
        if row.status not in ("succeeded", "refunded"):
            raise BillingError("not_refundable", status=row.status)
        if amount_minor > row.amount_minor - row.refunded_minor:
            raise BillingError("refund_exceeds_payment",
                               left=row.amount_minor - row.refunded_minor)
        refund = PaymentRefund(payment_id=row.id, provider=row.provider,
                               provider_refund_id=provider_refund_id,
                               amount_minor=amount_minor, reason=(reason or None) and
                               reason[:255])
        session.add(refund)
        session.flush()
        row.refunded_minor += amount_minor
        full = row.refunded_minor == row.amount_minor
        if full:
            row.status = "refunded"
        debited = shortfall = 0
        balance_after = premium_until = None
        if row.payment_type == "balance_topup":
            debited, balance_after = _debit_refund(session, row, refund, amount_minor)
            shortfall = amount_minor - debited
            if shortfall:
                refund.reason = (f"{reason or 'refund'}; not debited {shortfall} "
                                 f"{row.currency} minor units (already spent)")[:255]
        else:
            premium_until = _shorten_premium(session, row, amount_minor, full, now)
        outcome = RefundOutcome(refund.id, row.id, row.user_id, True, amount_minor,
                                row.currency, row.payment_type, row.status, debited, shortfall,
                                balance_after, premium_until)
    log.info("Refund applied", extra={"payment_id": payment_id, "refund_id": outcome.refund_id,
                                      "amount_minor": amount_minor,
                                      "shortfall_minor": shortfall})
    _observe(_on_refunded, provider_of_refund, outcome.payment_type)
    return outcome


def _observe(observer: Observer | None, provider: str, payment_type: str) -> None:
    if observer is None:
        return
    try:
        observer(provider, payment_type)
    except Exception:  # metrics never undo or fail a committed credit
        log.warning("credit observer failed", exc_info=True)


def _debit_refund(session: Session, payment: Payment, refund: PaymentRefund,
                  amount_minor: int) -> tuple[int, int]:
    """Take back up to `amount_minor` of a refunded top-up; never below zero."""
    session.execute(insert(Balance).values(user_id=payment.user_id, currency=payment.currency,
                                           amount_minor=0).on_conflict_do_nothing())
    current = session.execute(select(Balance.amount_minor).where(
        Balance.user_id == payment.user_id, Balance.currency == payment.currency)
        .with_for_update()).scalar_one()
    debit = min(amount_minor, current)
    if debit == 0:
        return 0, current
    after = current - debit
    session.execute(update(Balance).where(Balance.user_id == payment.user_id,
                                          Balance.currency == payment.currency)
                    .values(amount_minor=after))
    session.add(BalanceTransaction(user_id=payment.user_id, currency=payment.currency,
                                   amount_minor=-debit, balance_after_minor=after,
                                   kind="refund", payment_id=payment.id, refund_id=refund.id,
                                   description=f"refund of payment #{payment.id}"))
    return debit, after


def _shorten_premium(session: Session, payment: Payment, amount_minor: int, full: bool,
                     now: datetime) -> datetime | None:
    """Premium loses the refunded share of the period this payment bought, taken from the
    paid days still to come: first that period's own, then the paid periods after it. The
    trial's days and the past are never taken. What follows a removed stretch (later paid
    periods, a trial started during paid premium) moves up by it, so no gap opens."""
    assert payment.plan is not None
    period = timedelta(days=PLAN_DAYS[payment.plan])
    cut = timedelta(microseconds=period // timedelta(microseconds=1) * amount_minor
                    // payment.amount_minor)
    # The user's row first, as a credit locks it: concurrent credits and refunds of one user
    # take their turns and each sees the periods the one before committed.
    user = session.execute(select(User).where(User.id == payment.user_id)
                           .with_for_update()).scalars().one()
    future = list(session.execute(select(Subscription).where(
        Subscription.user_id == user.id, Subscription.status == "active",
        Subscription.ends_at > now).order_by(Subscription.starts_at, Subscription.id)
        .with_for_update()).scalars())
    own = session.execute(select(Subscription).where(
        Subscription.payment_id == payment.id).with_for_update()).scalars().first()
    paid = [s for s in future if s.plan != "trial"]
    by_hand = not paid and own is None  # paid days with no period rows (set by hand)
    if by_hand:
        removed = ([(max(now, user.premium_ends_at - cut), user.premium_ends_at)]
                   if user.premium_ends_at is not None and user.premium_ends_at > now else [])
    else:
        removed = _paid_stretches(paid, own, cut, now)

    def moved(instant: datetime) -> datetime:
        return instant - sum((min(end, instant) - start for start, end in removed
                              if start < instant), timedelta())

    for subscription in future:
        starts = moved(subscription.starts_at)
        subscription.starts_at = starts
        subscription.ends_at = max(moved(subscription.ends_at), starts + timedelta(seconds=1))
    if own is not None and full:
        own.status = "refunded"
    if user.trial_started_at is not None and user.trial_ends_at is not None:
        user.trial_started_at = moved(user.trial_started_at)
        user.trial_ends_at = moved(user.trial_ends_at)
    if user.premium_ends_at is None:
        return None
    ends = moved(user.premium_ends_at)
    paid_left = ends > now if by_hand else any(
        s.status == "active" and s.ends_at > now for s in paid)
    if not paid_left and ends > now:
        ends = now  # no paid day left: premium ended now, a trial still running remains
    user.premium_ends_at = ends
    trial_on = user.trial_ends_at is not None and user.trial_ends_at > now
    user.tier = "premium" if ends > now else ("trial" if trial_on else "free")
    return ends


def _paid_stretches(paid: list[Subscription], own: Subscription | None, cut: timedelta,
                    now: datetime) -> list[tuple[datetime, datetime]]:
    """The stretches of paid time to come (`paid`: the periods not over yet, in order) that
    make up `cut`: the tail of the refunded period's unused days, then the tails of the paid
    periods after it, last first. A period already used up (or none) gives its cut from the
    end of the paid days."""
    if own is not None and own in paid:
        order = [own, *reversed([s for s in paid if s is not own
                                 and s.starts_at >= own.ends_at])]
    else:
        order = list(reversed(paid))
    stretches: list[tuple[datetime, datetime]] = []
    left = cut
    for subscription in order:
        take = min(left, subscription.ends_at - max(subscription.starts_at, now))
        if take > timedelta():
            stretches.append((subscription.ends_at - take, subscription.ends_at))
            left -= take
    return stretches


def buy_with_balance(engine: Engine, user_id: int, plan: str, currency: str = "RUB",
                     now: datetime | None = None) -> datetime:
    """Premium paid from the internal balance: one transaction debits, records, extends."""
    now = now or datetime.now(UTC)
    cost = price(plan, currency)
    with Session(engine) as session, session.begin():
        payment = Payment(user_id=user_id, provider="balance", payment_type="subscription",
                          plan=plan, amount_minor=cost, currency=currency, status="succeeded",
                          completed_at=now, idempotence_key=uuid.uuid4())
        session.add(payment)
        session.flush()
        _change_balance(session, user_id, currency, -cost, "purchase", payment.id,
                        f"premium {plan}")
        until = _extend_premium(session, user_id, plan, "balance", payment.id, now)
    _observe(_on_credited, "balance", "subscription")
    return until


def expire_tiers(engine: Engine, now: datetime | None = None) -> int:
    """Trial or premium ended: back to free, nothing else touched. Paid days over with a trial
    that followed them still running: the tier is the trial's."""
    now = now or datetime.now(UTC)
    with Session(engine) as session, session.begin():
        freed = session.execute(
            update(User).where(
                User.tier != "free",
                (User.premium_ends_at.is_(None)) | (User.premium_ends_at <= now),
                (User.trial_ends_at.is_(None)) | (User.trial_ends_at <= now))
            .values(tier="free").returning(User.id)).all()
        to_trial = session.execute(
            update(User).where(User.tier == "premium", User.premium_ends_at <= now,
                               User.trial_ends_at > now)
            .values(tier="trial").returning(User.id)).all()
    return len(freed) + len(to_trial)
