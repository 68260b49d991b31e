"""Money: payments, balances, balance transactions and subscriptions.

Amounts are integer minor units (kopecks, cents; whole stars for XTR) plus a currency code.
A balance changes only together with a `balance_transactions` row in the same transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from habitbot.models.base import Base, str_enum, utc_now_column

PROVIDERS = ("yookassa", "cryptobot", "stars", "balance", "manual")
PAYMENT_STATUSES = ("pending", "waiting_for_capture", "succeeded", "canceled", "failed",
                    "refunded")
FINAL_PAYMENT_STATUSES = ("succeeded", "canceled", "failed", "refunded")
PAYMENT_TYPES = ("balance_topup", "subscription")
PLANS = ("trial", "month", "year")
SUBSCRIPTION_SOURCES = ("trial", "payment", "balance", "manual")
SUBSCRIPTION_STATUSES = ("active", "expired", "refunded", "canceled")
TRANSACTION_KINDS = ("topup", "purchase", "refund", "adjustment")


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("provider", "provider_payment_id"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("refunded_minor >= 0 AND refunded_minor <= amount_minor",
                        name="refund_within_amount"),
        CheckConstraint("payment_type <> 'subscription' OR plan IS NOT NULL",
                        name="subscription_has_plan"),
        CheckConstraint("char_length(currency) BETWEEN 3 AND 8", name="currency_code"),
        Index("ix_payments_user_created", "user_id", "created_at"),
        Index("ix_payments_created_at", "created_at"),
        Index("ix_payments_open", "status", "created_at",
              postgresql_where=text("status IN ('pending', 'waiting_for_capture')")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"),
                                         nullable=False)
    provider: Mapped[str] = mapped_column(str_enum(*PROVIDERS, name="provider", length=16),
                                          nullable=False)
    # Set once the provider answers; NULLs do not collide in the unique key.
    provider_payment_id: Mapped[str | None] = mapped_column(String(128))
    idempotence_key: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, unique=True,
                                                       default=uuid.uuid4)
    status: Mapped[str] = mapped_column(str_enum(*PAYMENT_STATUSES, name="payment_status",
                                                 length=24), nullable=False,
                                        server_default="pending")
    payment_type: Mapped[str] = mapped_column(str_enum(*PAYMENT_TYPES, name="payment_type",
                                                       length=24), nullable=False)
    plan: Mapped[str | None] = mapped_column(str_enum(*PLANS, name="payment_plan", length=16))
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(8), nullable=False)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    description: Mapped[str | None] = mapped_column(String(255))
    confirmation_url: Mapped[str | None] = mapped_column(Text)
    provider_data: Mapped[dict | None] = mapped_column(JSONB)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = utc_now_column()
    updated_at: Mapped[datetime] = utc_now_column(onupdate=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Balance(Base):
    __tablename__ = "balances"
    __table_args__ = (
        CheckConstraint("amount_minor >= 0", name="non_negative"),
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"),
                                         primary_key=True)
    currency: Mapped[str] = mapped_column(String(8), primary_key=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    updated_at: Mapped[datetime] = utc_now_column(onupdate=True)


class BalanceTransaction(Base):
    __tablename__ = "balance_transactions"
    __table_args__ = (
        CheckConstraint("amount_minor <> 0", name="amount_non_zero"),
        CheckConstraint("balance_after_minor >= 0", name="balance_after_non_negative"),
        # One credit (or purchase) per payment: a replayed webhook cannot credit twice. Refunds
        # may be partial and several, each keyed by its own `payment_refunds` row.
        Index("uq_balance_transactions_payment_kind", "payment_id", "kind", unique=True,
              postgresql_where=text("payment_id IS NOT NULL AND kind <> 'refund'")),
        Index("ix_balance_transactions_user_created", "user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"),
                                         nullable=False)
    currency: Mapped[str] = mapped_column(String(8), nullable=False)
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    balance_after_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    kind: Mapped[str] = mapped_column(str_enum(*TRANSACTION_KINDS, name="transaction_kind",
                                               length=16), nullable=False)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id",
                                                              ondelete="RESTRICT"))
    description: Mapped[str | None] = mapped_column(String(255))
    refund_id: Mapped[int | None] = mapped_column(
        ForeignKey("payment_refunds.id", ondelete="RESTRICT"), unique=True)
    created_at: Mapped[datetime] = utc_now_column()


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="period_ordered"),
        # The trial is given once per user.
        Index("uq_subscriptions_one_trial", "user_id", unique=True,
              postgresql_where=text("plan = 'trial'")),
        Index("ix_subscriptions_user_ends", "user_id", "ends_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"),
                                         nullable=False)
    plan: Mapped[str] = mapped_column(str_enum(*PLANS, name="subscription_plan", length=16),
                                      nullable=False)
    source: Mapped[str] = mapped_column(str_enum(*SUBSCRIPTION_SOURCES,
                                                 name="subscription_source", length=16),
                                        nullable=False)
    status: Mapped[str] = mapped_column(str_enum(*SUBSCRIPTION_STATUSES,
                                                 name="subscription_status", length=16),
                                        nullable=False, server_default="active")
    # One subscription per payment: a duplicate notification cannot extend premium twice.
    payment_id: Mapped[int | None] = mapped_column(
        ForeignKey("payments.id", ondelete="RESTRICT"), unique=True)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = utc_now_column()


NOTICE_KINDS = ("3d", "1d", "expired")
REFUND_STATUSES = ("pending", "succeeded", "canceled")


class PremiumNotice(Base):
    """One notice per (user, kind, end of the period it is about): a second scheduler or a rerun
    of the notices job cannot send it twice, and a renewed period gets its own notices."""

    __tablename__ = "premium_notices"
    __table_args__ = (
        UniqueConstraint("user_id", "kind", "period_ends_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         nullable=False)
    kind: Mapped[str] = mapped_column(str_enum(*NOTICE_KINDS, name="notice_kind", length=16),
                                      nullable=False)
    tier: Mapped[str] = mapped_column(String(16), nullable=False)  # trial | premium
    period_ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    sent_at: Mapped[datetime] = utc_now_column()


class PaymentRefund(Base):
    """A refund of (part of) a payment, keyed by the provider's refund id so a replayed
    `refund.succeeded` is applied once."""

    __tablename__ = "payment_refunds"
    __table_args__ = (
        UniqueConstraint("provider", "provider_refund_id"),
        CheckConstraint("amount_minor > 0", name="refund_amount_positive"),
        Index("ix_payment_refunds_payment", "payment_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id", ondelete="RESTRICT"),
                                            nullable=False)
    provider: Mapped[str] = mapped_column(String(16), nullable=False)
    provider_refund_id: Mapped[str] = mapped_column(String(128), nullable=False)
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(str_enum(*REFUND_STATUSES, name="refund_status",
                                                 length=16), nullable=False,
                                        server_default="succeeded")
    reason: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = utc_now_column()
