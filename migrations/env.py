"""Alembic environment.

The database URL comes from DATABASE_URL (or a connection handed over by the deploy gate, which
holds an advisory lock on it). Every migration runs with a lock timeout, so a migration that
would queue behind a long transaction on a live table fails fast instead of blocking traffic.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import text

from habitbot.db import make_engine
from habitbot.models import Base

LOCK_TIMEOUT = "5s"
STATEMENT_TIMEOUT = "120s"

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=os.environ.get("DATABASE_URL", ""), target_metadata=target_metadata,
                      literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    connection.execute(text(f"SET lock_timeout = '{LOCK_TIMEOUT}'"))
    connection.execute(text(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'"))
    # Session settings outlive this commit; alembic then owns the transactions (one per
    # migration), which lets a migration leave them for an autocommit block (CONCURRENTLY).
    connection.commit()
    context.configure(connection=connection, target_metadata=target_metadata,
                      compare_type=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    engine = make_engine(url, "cli")
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
