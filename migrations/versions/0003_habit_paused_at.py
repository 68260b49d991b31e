"""Remember since when a habit is paused, so paused days are neutral in its statistics.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column without a default: a metadata-only change, safe on a live table.
    op.add_column("habits", sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE habits SET paused_at = updated_at WHERE NOT is_active "
               "AND archived_at IS NULL")


def downgrade() -> None:
    op.drop_column("habits", "paused_at")
