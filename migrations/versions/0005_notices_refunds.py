"""Premium notices sent once per period; refunds keyed by the provider's refund id.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _enum(*values: str, name: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    op.create_table(
        "premium_notices",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", _enum("3d", "1d", "expired", name="notice_kind"), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("period_ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_premium_notices_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_premium_notices")),
        sa.UniqueConstraint("user_id", "kind", "period_ends_at",
                            name=op.f("uq_premium_notices_user_id_kind_period_ends_at")),
    )
    op.create_table(
        "payment_refunds",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("payment_id", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("provider_refund_id", sa.String(length=128), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", _enum("pending", "succeeded", "canceled", name="refund_status"),
                  server_default="succeeded", nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("amount_minor > 0",
                           name=op.f("ck_payment_refunds_refund_amount_positive")),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.id"],
                                name=op.f("fk_payment_refunds_payment_id_payments"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_refunds")),
        sa.UniqueConstraint("provider", "provider_refund_id",
                            name=op.f("uq_payment_refunds_provider_provider_refund_id")),
    )
    op.create_index("ix_payment_refunds_payment", "payment_refunds", ["payment_id"])
    op.add_column("balance_transactions", sa.Column("refund_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(op.f("fk_balance_transactions_refund_id_payment_refunds"),
                          "balance_transactions", "payment_refunds", ["refund_id"], ["id"],
                          ondelete="RESTRICT")
    op.create_unique_constraint(op.f("uq_balance_transactions_refund_id"),
                                "balance_transactions", ["refund_id"])
    op.drop_index("uq_balance_transactions_payment_kind", table_name="balance_transactions",
                  postgresql_where=sa.text("payment_id IS NOT NULL"))
    op.create_index("uq_balance_transactions_payment_kind", "balance_transactions",
                    ["payment_id", "kind"], unique=True,
                    postgresql_where=sa.text("payment_id IS NOT NULL AND kind <> 'refund'"))


def downgrade() -> None:
    op.drop_index("uq_balance_transactions_payment_kind", table_name="balance_transactions",
                  postgresql_where=sa.text("payment_id IS NOT NULL AND kind <> 'refund'"))
    op.create_index("uq_balance_transactions_payment_kind", "balance_transactions",
                    ["payment_id", "kind"], unique=True,
                    postgresql_where=sa.text("payment_id IS NOT NULL"))
    op.drop_constraint(op.f("uq_balance_transactions_refund_id"), "balance_transactions",
                       type_="unique")
    op.drop_constraint(op.f("fk_balance_transactions_refund_id_payment_refunds"),
                       "balance_transactions", type_="foreignkey")
    op.drop_column("balance_transactions", "refund_id")
    op.drop_index("ix_payment_refunds_payment", table_name="payment_refunds")
    op.drop_table("payment_refunds")
    op.drop_table("premium_notices")
