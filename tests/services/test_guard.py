"""Schema guard: DEGRADED on drift with one alert, back to normal by itself once fixed."""

from __future__ import annotations

from alembic import command
from sqlalchemy import select, text

from habitbot.db import make_engine
from habitbot.models import AdminAlert
from habitbot.services import schema
from habitbot.services.alerts import AlertService
from habitbot.services.guard import SchemaGuard
from habitbot.services.schema import alembic_config_for, run_deploy_gate


def _alerts(engine):
    with engine.connect() as conn:
        return conn.execute(select(AdminAlert.fingerprint, AdminAlert.status)
                            .order_by(AdminAlert.id)).all()


def test_drift_enters_degraded_once_and_recovers_after_the_gate(scratch_database, redis_conn):
    eng = make_engine(scratch_database, "cli")
    run_deploy_gate(eng)
    sent: list[str] = []
    alerts = AlertService(eng, redis_conn, lambda chat, msg: sent.append(msg), 1)
    guards = [SchemaGuard(eng, name, alerts) for name in ("bot", "scheduler", "worker")]
    assert [g.check() for g in guards] == ["ok", "ok", "ok"]

    command.downgrade(alembic_config_for(scratch_database), "-1")  # a skipped migration
    for _ in range(3):  # three processes, three checks each: still one alert
        assert [g.check() for g in guards] == ["degraded"] * 3
    below = schema.revision_below_head()
    assert all(f"database is at revision {below}" in g.reason for g in guards)
    assert len([m for m in sent if "DEGRADED" in m]) == 1

    run_deploy_gate(eng)
    assert [g.check() for g in guards] == ["ok", "ok", "ok"]
    assert len([m for m in sent if "left DEGRADED" in m]) == 1
    # one row: the other processes' alerts fell inside the cooldown (counted, not stored)
    assert [a.fingerprint for a in _alerts(eng)].count("schema:degraded") == 1
    eng.dispose()


def test_dropped_column_degrades_naming_it(scratch_database, redis_conn):
    eng = make_engine(scratch_database, "cli")
    run_deploy_gate(eng)
    with eng.begin() as conn:
        conn.execute(text("ALTER TABLE users DROP COLUMN timezone"))
    guard = SchemaGuard(eng, "bot")
    assert guard.check() == "degraded"
    assert "column users.timezone is missing" in guard.reason
    eng.dispose()


def test_unreachable_database_keeps_the_last_known_state(pg_proxy, database_url):
    eng = make_engine(pg_proxy.url_for(database_url), "cli", connect_timeout=1)
    guard = SchemaGuard(eng, "bot")
    assert guard.check() == "ok"
    pg_proxy.set_mode("refuse")
    assert guard.check() == "ok" and not guard.degraded
    eng.dispose()
