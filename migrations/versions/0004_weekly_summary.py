"""Weekly summaries: remember the week last sent, and find due users by zone through an index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("weekly_summary_sent_on", sa.Date(), nullable=True))
    op.create_index("ix_users_summary_zone", "users", ["timezone", "weekly_summary_weekday"],
                    postgresql_where=sa.text("weekly_summary_enabled AND NOT is_blocked"))


def downgrade() -> None:
    op.drop_index("ix_users_summary_zone", table_name="users")
    op.drop_column("users", "weekly_summary_sent_on")
