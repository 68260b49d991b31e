"""Indexes for the operator dashboard's aggregates over a million users, built without blocking
writes (CREATE INDEX CONCURRENTLY, outside a transaction, without the statement timeout).

A concurrent build that fails leaves an INVALID index behind; it is dropped and built again on
the next run of the deploy gate.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_habit_checkins_date_status", "habit_checkins", "(local_date, status)"),
    ("ix_habits_created_at", "habits", "(created_at)"),
    ("ix_habits_active", "habits", "(id) WHERE is_active"),
    ("ix_users_last_seen_at", "users", "(last_seen_at)"),
    ("ix_users_blocked", "users", "(id) WHERE is_blocked"),
    ("ix_reminder_deliveries_created_status", "reminder_deliveries", "(created_at, status)"),
    ("ix_payments_created_at", "payments", "(created_at)"),
)


def _drop_if_invalid(name: str) -> None:
    op.execute(f"""
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                     WHERE c.relname = '{name}' AND NOT i.indisvalid) THEN
            EXECUTE 'DROP INDEX {name}';
          END IF;
        END $$""")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("SET statement_timeout = 0")
        for name, table, columns in INDEXES:
            _drop_if_invalid(name)
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} {columns}")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_reminder_deliveries_created_at")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("SET statement_timeout = 0")
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_reminder_deliveries_created_at "
                   "ON reminder_deliveries (created_at)")
        for name, _table, _columns in INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
