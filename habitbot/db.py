"""Engine and session factory.

Every process builds one engine with `make_engine(settings, kind)`: the pool size follows what the
process does, connections are checked before use (`pool_pre_ping`, so a PostgreSQL restart is
survived without a process restart) and a connect timeout keeps an unreachable database from
hanging a caller for minutes.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import sessionmaker

ProcessKind = Literal["bot", "web", "worker", "scheduler", "cli"]

# (pool_size, max_overflow): the bot runs a few handler threads, each gunicorn worker a few
# request threads; workers and the scheduler do one job at a time.
POOL_SIZES: dict[str, tuple[int, int]] = {
    "bot": (5, 5),
    "web": (4, 4),
    "worker": (2, 2),
    "scheduler": (2, 1),
    "cli": (1, 2),
}
STATEMENT_TIMEOUT_MS = 30_000


def normalise_url(url: str) -> str:
    """Accept postgres:// and postgresql:// and pin the psycopg2 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def make_engine(database_url: str, kind: ProcessKind = "cli", connect_timeout: int = 3,
                statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
                pool_size: int | None = None) -> Engine:
    """`pool_size` overrides the kind's (the web program passes its thread count: a request
    thread holds one connection, and threads beyond the pool would open and close an
    overflow connection per request under load)."""
    default_size, overflow = POOL_SIZES[kind]
    pool_size = pool_size or default_size
    return create_engine(
        normalise_url(database_url),
        pool_size=pool_size,
        max_overflow=overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_timeout=10,
        # Errors name the statement, never its values: those hold users' texts, e-mails and
        # payment data, and errors end up in logs.
        hide_parameters=True,
        connect_args={
            "connect_timeout": connect_timeout,
            "application_name": f"habitbot-{kind}",
            "options": f"-c statement_timeout={statement_timeout_ms}",
            # Detect a dead server on an idle connection instead of hanging on it.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        },
    )


def make_session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(bind=engine, expire_on_commit=False)
