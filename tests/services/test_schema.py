"""Deploy gate and schema verification against real PostgreSQL."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from habitbot.db import make_engine
from habitbot.services import schema
from habitbot.services.schema import GateError, check_schema, run_deploy_gate


@pytest.fixture
def scratch_engine(scratch_database):
    eng = make_engine(scratch_database, "cli")
    yield eng
    eng.dispose()


def _gate_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "habitbot.cli", "deploy-gate", *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_gate_migrates_an_empty_database_to_head(scratch_engine):
    report = run_deploy_gate(scratch_engine)
    assert report.ok and report.current == report.heads == schema.code_heads()
    assert check_schema(scratch_engine).ok


def test_one_revision_below_head_is_reported_and_the_gate_fixes_it(scratch_engine,
                                                                   scratch_database):
    run_deploy_gate(scratch_engine)
    from alembic import command

    command.downgrade(schema.alembic_config_for(scratch_database), "-1")
    report = check_schema(scratch_engine)
    assert not report.ok
    assert any("run `make deploy-gate`" in p for p in report.problems)
    assert any(f"database is at revision {schema.revision_below_head()}" in p
               for p in report.problems)
    assert run_deploy_gate(scratch_engine).ok


def test_dropped_mapped_column_fails_the_gate_naming_table_and_column(scratch_engine,
                                                                      scratch_database):
    run_deploy_gate(scratch_engine)
    with scratch_engine.begin() as conn:
        conn.execute(text("ALTER TABLE users DROP COLUMN notifications_enabled"))
    result = _gate_cli(scratch_database)
    assert result.returncode == 1
    assert "column users.notifications_enabled is missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_extra_unmapped_column_is_allowed_for_rollbacks(scratch_engine):
    run_deploy_gate(scratch_engine)
    with scratch_engine.begin() as conn:
        conn.execute(text("ALTER TABLE users ADD COLUMN from_next_release text"))
    assert check_schema(scratch_engine).ok


def test_incompatible_column_type_is_reported(scratch_engine):
    run_deploy_gate(scratch_engine)
    with scratch_engine.begin() as conn:
        conn.execute(text("ALTER TABLE habits ALTER COLUMN position TYPE text"))
        conn.execute(text("ALTER TABLE users ALTER COLUMN telegram_id TYPE integer"))
    problems = check_schema(scratch_engine).problems
    assert any(p.startswith("column habits.position has type TEXT") for p in problems)
    assert any("column users.telegram_id is INTEGER" in p for p in problems)


def test_two_gates_at_once_serialise_on_the_advisory_lock(scratch_database):
    results: list[object] = []

    def gate() -> None:
        eng = make_engine(scratch_database, "cli")
        try:
            results.append(run_deploy_gate(eng).ok)
        except Exception as exc:  # collected and asserted below
            results.append(exc)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=gate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [True, True, True]
    eng = make_engine(scratch_database, "cli")
    with eng.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    eng.dispose()
    assert versions == list(schema.code_heads())


def test_gate_waits_then_fails_clearly_while_another_holds_the_lock(scratch_engine):
    with scratch_engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": schema.GATE_LOCK_KEY})
        other = make_engine(str(scratch_engine.url.render_as_string(hide_password=False)), "cli")
        try:
            with pytest.raises(GateError, match="another deploy gate"):
                run_deploy_gate(other, lock_wait_seconds=0.5)
        finally:
            other.dispose()


def test_unreachable_database_fails_fast_with_a_clear_message():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _gate_cli(f"postgresql://postgres:pw@127.0.0.1:{port}/x")
    assert result.returncode == 1
    assert "database unreachable" in result.stderr and ":pw@" not in result.stderr


def test_hung_database_fails_within_the_connect_timeout(pg_proxy, database_url):
    pg_proxy.set_mode("hang")
    result = _gate_cli(pg_proxy.url_for(database_url), "--connect-timeout", "2")
    assert result.returncode == 1
    assert "database unreachable" in result.stderr


def test_multiple_migration_heads_fail_the_check(tmp_path, monkeypatch, scratch_engine):
    copy = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS_DIR, copy)
    (copy / "versions" / "9999_branch.py").write_text(
        'revision = "9999"\ndown_revision = "0001"\nbranch_labels = None\n'
        "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n")
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", Path(copy))
    report = check_schema(scratch_engine)
    assert any("2 heads" in p and "alembic merge heads" in p for p in report.problems)
