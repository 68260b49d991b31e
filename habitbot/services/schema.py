"""Schema verification and the deploy gate.

`verify_schema` compares the live database with what the code needs: the alembic revision must
equal the single head of `migrations/`, and every table and column the models map must exist
with a compatible type. Columns the models do not map are allowed, so the previous release still
runs after a migration adds one (a rollback stays possible).

`run_deploy_gate` upgrades to head under a PostgreSQL advisory lock (two gates started at once
serialise instead of racing) and then verifies.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text, types
from sqlalchemy.exc import DBAPIError, OperationalError

from habitbot.models import Base

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# Any constant works; it only has to be the same for every deploy gate.
GATE_LOCK_KEY = 0x48616269  # "Habi"
GATE_LOCK_WAIT_SECONDS = 120


@dataclass
class SchemaReport:
    ok: bool
    current: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        if self.ok:
            return f"schema ok at revision {', '.join(self.current)}"
        return "; ".join(self.problems)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def alembic_config_for(database_url: str) -> Config:
    """A configuration that connects by URL (for alembic commands outside the gate)."""
    cfg = alembic_config()
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def revision_below_head() -> str | None:
    """The revision one migration below the code's head (what `alembic downgrade -1` leaves:
    a skipped migration)."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_revision(script.get_current_head() or "head")
    below = head.down_revision if head is not None else None
    return below if isinstance(below, str) or below is None else sorted(below)[0]


def code_heads() -> tuple[str, ...]:
    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def _family(type_: types.TypeEngine) -> str:
    """A coarse type family: what must agree between a model column and the database."""
    checks: list[tuple[type, str]] = [
        (types.Boolean, "boolean"),
        (types.Integer, "integer"),
        (types.Numeric, "numeric"),
        (types.DateTime, "datetime"),
        (types.Date, "date"),
        (types.Time, "time"),
        (types.Uuid, "uuid"),
        (types.JSON, "json"),
        (types.String, "string"),  # also Text, Enum (stored as VARCHAR)
        (types.LargeBinary, "binary"),
    ]
    for cls, name in checks:
        if isinstance(type_, cls):
            return name
    return type(type_).__name__.lower()


_INT_WIDTH = {"SmallInteger": 2, "Integer": 4, "BigInteger": 8}


def _int_width(type_: types.TypeEngine) -> int:
    for cls in type(type_).__mro__:
        if cls.__name__ in _INT_WIDTH:
            return _INT_WIDTH[cls.__name__]
        if cls.__name__ in ("SMALLINT",):
            return 2
        if cls.__name__ in ("BIGINT",):
            return 8
    return 4


def _type_problem(table: str, column: str, model_type: types.TypeEngine,
                  db_type: types.TypeEngine) -> str | None:
    model_family, db_family = _family(model_type), _family(db_type)
    where = f"column {table}.{column}"
    if model_family != db_family:
        return f"{where} has type {db_type} in the database, the code needs {model_type}"
    if model_family == "integer" and _int_width(db_type) < _int_width(model_type):
        return f"{where} is {db_type} in the database, narrower than {model_type}"
    if model_family == "datetime":
        model_tz = bool(getattr(model_type, "timezone", False))
        db_tz = bool(getattr(db_type, "timezone", False))
        if model_tz != db_tz:
            return f"{where} timezone awareness differs (database {db_type})"
    if model_family == "string":
        model_len = getattr(model_type, "length", None)
        db_len = getattr(db_type, "length", None)
        if model_len and db_len and db_len < model_len:
            return f"{where} is {db_type} in the database, shorter than the code's {model_len}"
    return None


def column_problems(conn: Connection) -> list[str]:
    """Every mapped table and column must exist with a compatible type; extras are allowed."""
    inspector = inspect(conn)
    existing_tables = set(inspector.get_table_names())
    problems: list[str] = []
    for table in Base.metadata.sorted_tables:
        if table.name not in existing_tables:
            problems.append(f"table {table.name} is missing")
            continue
        db_columns = {c["name"]: c for c in inspector.get_columns(table.name)}
        for column in table.columns:
            db_column = db_columns.get(column.name)
            if db_column is None:
                problems.append(f"column {table.name}.{column.name} is missing")
                continue
            problem = _type_problem(table.name, column.name, column.type, db_column["type"])
            if problem:
                problems.append(problem)
            elif not column.nullable and db_column["nullable"] and not column.primary_key:
                problems.append(f"column {table.name}.{column.name} allows NULL in the database "
                                "but the code requires a value")
    return problems


def current_revisions(conn: Connection) -> tuple[str, ...]:
    return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))


def verify_schema(conn: Connection) -> SchemaReport:
    heads = code_heads()
    current = current_revisions(conn)
    problems: list[str] = []
    if len(heads) > 1:
        problems.append(f"migrations have {len(heads)} heads ({', '.join(heads)}): merge them "
                        "with `alembic merge heads` before deploying")
    if current != heads:
        shown = ", ".join(current) or "none (empty database)"
        problems.append(f"database is at revision {shown}, the code expects "
                        f"{', '.join(heads)}: run `make deploy-gate`")
    problems.extend(column_problems(conn))
    return SchemaReport(ok=not problems, current=current, heads=heads, problems=problems)


def check_schema(engine: Engine) -> SchemaReport:
    with engine.connect() as conn:
        return verify_schema(conn)


class GateError(Exception):
    """The deploy gate failed; the message says what is wrong and what to run."""


def _acquire_gate_lock(conn: Connection, wait_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    while True:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": GATE_LOCK_KEY}).scalar()
        conn.commit()
        if got:
            return
        if time.monotonic() > deadline:
            raise GateError(f"another deploy gate still holds the migration lock after "
                            f"{wait_seconds:.0f} s; check for a stuck `habitbot deploy-gate`")
        log.info("deploy gate waiting for another gate to finish")
        time.sleep(0.5)


def run_deploy_gate(engine: Engine, lock_wait_seconds: float = GATE_LOCK_WAIT_SECONDS,
                    upgrade: bool = True) -> SchemaReport:
    """Upgrade to head (unless told not to) and verify; raise GateError on any problem."""
    try:
        with engine.connect() as conn:
            _acquire_gate_lock(conn, lock_wait_seconds)
            try:
                if upgrade:
                    cfg = alembic_config()
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "heads" if len(code_heads()) > 1 else "head")
                    conn.commit()
                report = verify_schema(conn)
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": GATE_LOCK_KEY})
                conn.commit()
    except OperationalError as exc:
        raise GateError(f"database unreachable: {_db_reason(exc)}; check DATABASE_URL and that "
                        "PostgreSQL is running") from None
    except DBAPIError as exc:
        raise GateError(f"migration failed: {_db_reason(exc)}") from None
    if not report.ok:
        hint = ("" if report.current != report.heads else
                "; the revision is at head, so the database was changed by hand: restore what is "
                "missing or add a migration that creates it")
        raise GateError("schema does not match the code: " + report.summary + hint)
    return report


def _db_reason(exc: DBAPIError) -> str:
    """The driver's first line, without the connection string (it can hold a password)."""
    message = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
    return message.split(" (", 1)[0] if "password" in message.lower() else message
