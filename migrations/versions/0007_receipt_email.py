"""The e-mail a user's 54-FZ receipts are sent to (YooKassa payments with receipts on).

Safe on a live table: the nullable column without a default is a metadata-only change, the
check constraint is added NOT VALID (no scan under the exclusive lock) and validated afterwards
in its own transaction, which scans without blocking reads or writes. A downgrade drops the
column and the stored addresses with it: users are simply asked again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "ck_users_receipt_email_shape"


def upgrade() -> None:
    op.add_column("users", sa.Column("receipt_email", sa.String(length=254), nullable=True))
    op.execute(f"ALTER TABLE users ADD CONSTRAINT {CONSTRAINT} "
               "CHECK (receipt_email IS NULL OR receipt_email LIKE '_%@_%') NOT VALID")
    with op.get_context().autocommit_block():
        op.execute(f"ALTER TABLE users VALIDATE CONSTRAINT {CONSTRAINT}")


def downgrade() -> None:
    op.execute(f"ALTER TABLE users DROP CONSTRAINT IF EXISTS {CONSTRAINT}")
    op.drop_column("users", "receipt_email")
