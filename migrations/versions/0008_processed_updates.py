"""The Telegram updates the bot has taken, so that an update delivered again after a restart
or a crash is not handled twice.

A new table: nothing to lock on a live database. Rows older than 7 days are deleted by the
maintenance job (Telegram keeps an unconfirmed update for 24 hours). A downgrade drops the
record: after it, an update delivered again could be handled twice, as before this revision.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "processed_updates",
        sa.Column("bot_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("update_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.Enum("handling", "handled", name="update_status",
                                    native_enum=False, create_constraint=True, length=16),
                  nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("bot_id", "update_id", name=op.f("pk_processed_updates")),
    )
    op.create_index("ix_processed_updates_claimed_at", "processed_updates", ["claimed_at"])


def downgrade() -> None:
    op.drop_index("ix_processed_updates_claimed_at", table_name="processed_updates")
    op.drop_table("processed_updates")
