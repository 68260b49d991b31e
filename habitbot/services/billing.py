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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from habitbot.models import Balance, BalanceTransaction, Payment, Subscription, User

log = logging.getLogger(__name__)

TRIAL_DAYS = 7
PLAN_DAYS = {"month": 30, "year": 365}
# Prices in minor units per currency (kopecks, cents; whole stars for XTR).
PRICES: dict[str, dict[str, int]] = {
    "month": {"RUB": 19900, "USD": 299, "XTR": 150},
    "year": {"RUB": 149000, "USD": 2299, "XTR": 1100},
}
OPEN_STATUSES = ("pending", "waiting_for_capture")


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


def price(plan: str, currency: str) -> int:
    try:
        return PRICES[plan][currency]
    except KeyError:
        raise BillingError("no_price", plan=plan, currency=currency) from None


def status(engine: Engine, user_id: int, now: datetime | None = None) -> PremiumStatus:
    now = now or datetime.now(UTC)
    with Session(engine) as session:
        user = session.execute(select(User.premium_ends_at, User.trial_ends_at,
                                      User.trial_started_at).where(User.id == user_id)).one()
        trial_used = user.trial_started_at is not None or session.execute(
            select(Subscription.id).where(Subscription.user_id == user_id,
                                          Subscription.plan == "trial")).first() is not None
    if user.premium_ends_at and user.premium_ends_at > now:
        return PremiumStatus("premium", user.premium_ends_at, not trial_used)
    if user.trial_ends_at and user.trial_ends_at > now:
        return PremiumStatus("trial", user.trial_ends_at, False)
    return PremiumStatus("free", None, not trial_used)


def start_trial(engine: Engine, user_id: int, now: datetime | None = None,
                days: int = TRIAL_DAYS) -> datetime:
    """Once per user (a unique index refuses a second trial)."""
    now = now or datetime.now(UTC)
    ends = now + timedelta(days=days)
    try:
        with Session(engine) as session, session.begin():
            session.add(Subscription(user_id=user_id, plan="trial", source="trial",
                                     starts_at=now, ends_at=ends))
            session.flush()
            session.execute(update(User).where(User.id == user_id).values(
                tier="trial", trial_started_at=now, trial_ends_at=ends))
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


def _change_balance(session: Session, user_id: int, currency: str, delta: int, kind: str,
                    payment_id: int | None, description: str) -> int:
    """The balance row and its transaction row, in the caller's transaction."""
    session.execute(insert(Balance).values(user_id=user_id, currency=currency, amount_minor=0)
                    .on_conflict_do_nothing())
    current = session.execute(select(Balance.amount_minor).where(
        Balance.user_id == user_id, Balance.currency == currency).with_for_update()).scalar_one()
    after = current + delta
    if after < 0:
        raise BillingError("insufficient_balance", missing=-after)
    session.execute(update(Balance).where(Balance.user_id == user_id,
                                          Balance.currency == currency)
                    .values(amount_minor=after))
    session.add(BalanceTransaction(user_id=user_id, currency=currency, amount_minor=delta,
                                   balance_after_minor=after, kind=kind, payment_id=payment_id,
                                   description=description[:255]))
    return after


def _extend_premium(session: Session, user_id: int, plan: str, source: str,
                    payment_id: int | None, now: datetime) -> datetime:
    current = session.execute(select(User.premium_ends_at).where(User.id == user_id)
                              .with_for_update()).scalar()
    start = current if current and current > now else now
    ends = start + timedelta(days=PLAN_DAYS[plan])
    session.add(Subscription(user_id=user_id, plan=plan, source=source, payment_id=payment_id,
                             starts_at=start, ends_at=ends))
    session.execute(update(User).where(User.id == user_id).values(
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
                     now: datetime | None = None) -> Completion:
    """Credit a verified payment exactly once. The caller passes what the provider says was
    paid; a mismatch with our row is refused and nothing changes."""
    now = now or datetime.now(UTC)
    with Session(engine) as session, session.begin():
        row = session.execute(select(Payment).where(Payment.id == payment_id)
                              .with_for_update()).scalars().first()
        if row is None:
            raise BillingError("unknown_payment")
        if row.amount_minor != amount_minor or row.currency != currency:
            raise BillingError("amount_mismatch")
        if row.status not in OPEN_STATUSES:
            log.info(f"Idempotent: payment {payment_id} already completed",
                     extra={"payment_id": payment_id, "status": row.status})
            return Completion(payment_id, False, row.status)
        row.status, row.completed_at = "succeeded", now
        payment_type = row.payment_type
        if provider_payment_id and not row.provider_payment_id:
            row.provider_payment_id = provider_payment_id
        balance_after = premium_until = None
        if row.payment_type == "balance_topup":
            balance_after = _change_balance(session, row.user_id, row.currency,
                                            row.amount_minor, "topup", row.id,
                                            f"top-up via {row.provider}")
        else:
            assert row.plan is not None
            premium_until = _extend_premium(session, row.user_id, row.plan, "payment", row.id,
                                            now)
    log.info("Payment completed", extra={"payment_id": payment_id,
                                         "payment_type": payment_type})
    return Completion(payment_id, True, "succeeded", balance_after, premium_until)


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
        return _extend_premium(session, user_id, plan, "balance", payment.id, now)


def expire_tiers(engine: Engine, now: datetime | None = None) -> int:
    """Trial or premium ended: back to free, nothing else touched."""
    now = now or datetime.now(UTC)
    with Session(engine) as session, session.begin():
        rows = session.execute(
            update(User).where(
                User.tier != "free",
                (User.premium_ends_at.is_(None)) | (User.premium_ends_at <= now),
                (User.trial_ends_at.is_(None)) | (User.trial_ends_at <= now))
            .values(tier="free").returning(User.id)).all()
    return len(rows)
