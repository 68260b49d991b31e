"""Billing schema: payments, balances, balance transactions and subscriptions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "balances",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount_minor >= 0", name=op.f("ck_balances_non_negative")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_balances_user_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("user_id", "currency", name=op.f("pk_balances")),
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "provider",
            sa.Enum(
                "yookassa",
                "cryptobot",
                "stars",
                "balance",
                "manual",
                name="provider",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("provider_payment_id", sa.String(length=128), nullable=True),
        sa.Column("idempotence_key", sa.Uuid(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "waiting_for_capture",
                "succeeded",
                "canceled",
                "failed",
                "refunded",
                name="payment_status",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column(
            "payment_type",
            sa.Enum(
                "balance_topup",
                "subscription",
                name="payment_type",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column(
            "plan",
            sa.Enum(
                "trial",
                "month",
                "year",
                name="payment_plan",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=True,
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("refunded_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("confirmation_url", sa.Text(), nullable=True),
        sa.Column("provider_data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "payment_type <> 'subscription' OR plan IS NOT NULL",
            name=op.f("ck_payments_subscription_has_plan"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_payments_amount_positive")),
        sa.CheckConstraint(
            "char_length(currency) BETWEEN 3 AND 8", name=op.f("ck_payments_currency_code")
        ),
        sa.CheckConstraint(
            "refunded_minor >= 0 AND refunded_minor <= amount_minor",
            name=op.f("ck_payments_refund_within_amount"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_payments_user_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("idempotence_key", name=op.f("uq_payments_idempotence_key")),
        sa.UniqueConstraint(
            "provider", "provider_payment_id", name=op.f("uq_payments_provider_provider_payment_id")
        ),
    )
    op.create_index(
        "ix_payments_open",
        "payments",
        ["status", "created_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'waiting_for_capture')"),
    )
    op.create_index("ix_payments_user_created", "payments", ["user_id", "created_at"], unique=False)
    op.create_table(
        "balance_transactions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("balance_after_minor", sa.BigInteger(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "topup",
                "purchase",
                "refund",
                "adjustment",
                name="transaction_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("payment_id", sa.BigInteger(), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "amount_minor <> 0", name=op.f("ck_balance_transactions_amount_non_zero")
        ),
        sa.CheckConstraint(
            "balance_after_minor >= 0",
            name=op.f("ck_balance_transactions_balance_after_non_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_balance_transactions_payment_id_payments"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_balance_transactions_user_id_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_balance_transactions")),
    )
    op.create_index(
        "ix_balance_transactions_user_created",
        "balance_transactions",
        ["user_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "uq_balance_transactions_payment_kind",
        "balance_transactions",
        ["payment_id", "kind"],
        unique=True,
        postgresql_where=sa.text("payment_id IS NOT NULL"),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "plan",
            sa.Enum(
                "trial",
                "month",
                "year",
                name="subscription_plan",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "source",
            sa.Enum(
                "trial",
                "payment",
                "balance",
                "manual",
                name="subscription_source",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "expired",
                "refunded",
                "canceled",
                name="subscription_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="active",
            nullable=False,
        ),
        sa.Column("payment_id", sa.BigInteger(), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_subscriptions_period_ordered")),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_subscriptions_payment_id_payments"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_subscriptions_user_id_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_subscriptions_payment_id")),
    )
    op.create_index(
        "ix_subscriptions_user_ends", "subscriptions", ["user_id", "ends_at"], unique=False
    )
    op.create_index(
        "uq_subscriptions_one_trial",
        "subscriptions",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("plan = 'trial'"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_subscriptions_one_trial",
        table_name="subscriptions",
        postgresql_where=sa.text("plan = 'trial'"),
    )
    op.drop_index("ix_subscriptions_user_ends", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_index(
        "uq_balance_transactions_payment_kind",
        table_name="balance_transactions",
        postgresql_where=sa.text("payment_id IS NOT NULL"),
    )
    op.drop_index("ix_balance_transactions_user_created", table_name="balance_transactions")
    op.drop_table("balance_transactions")
    op.drop_index("ix_payments_user_created", table_name="payments")
    op.drop_index(
        "ix_payments_open",
        table_name="payments",
        postgresql_where=sa.text("status IN ('pending', 'waiting_for_capture')"),
    )
    op.drop_table("payments")
    op.drop_table("balances")
