"""The operator command line: clear output, clear errors, non-zero exit on failure."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from habitbot.services.conversations import ConversationStore


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "habitbot.cli", *args],
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                          text=True, timeout=60)


def test_fsm_reset_forgets_a_stuck_dialog(redis_conn, redis_url):
    ConversationStore(redis_conn).set(4242, "tz:ask", {"flow": "onb"})
    result = _run("fsm", "reset", "4242", REDIS_URL=redis_url)
    assert result.returncode == 0
    assert "conversation of user 4242 reset (was in state 'tz:ask')" in result.stdout
    assert ConversationStore(redis_conn).get(4242).state is None
    again = _run("fsm", "reset", "4242", REDIS_URL=redis_url)
    assert again.returncode == 0 and "had no conversation in progress" in again.stdout


@pytest.mark.parametrize("bad", ["abc", "-5", "0", "1e9", "99999999999999999999999"])
def test_fsm_reset_refuses_malformed_ids(bad, redis_url):
    result = _run("fsm", "reset", bad, REDIS_URL=redis_url)
    assert result.returncode == 2 and "not a Telegram user id" in result.stderr


def test_fsm_reset_with_redis_down_fails_clearly(redis_proxy, redis_url):
    redis_proxy.set_mode("refuse")
    result = _run("fsm", "reset", "1", REDIS_URL=redis_proxy.url_for(redis_url))
    assert result.returncode == 1 and "redis unreachable" in result.stderr


def test_every_command_has_help():
    for args in (["--help"], ["deploy-gate", "--help"], ["check-schema", "--help"],
                 ["fsm", "reset", "--help"], ["alert", "test", "--help"]):
        result = _run(*args)
        assert result.returncode == 0 and "usage: habitbot" in result.stdout


def test_missing_configuration_is_one_line():
    result = _run("check-schema")
    assert result.returncode == 2
    assert result.stderr.strip() == ("FAIL: configuration error: DATABASE_URL is not set: "
                                     "expected a postgresql:// URL")


def test_jobs_commands_list_fail_requeue_and_remove(redis_conn, redis_url):
    from rq import Queue

    from tests.support.jobs import run_burst

    queue = Queue("default", connection=redis_conn)
    job = queue.enqueue("builtins.int", "not a number")
    run_burst(redis_conn, queue.name)
    listed = _run("jobs", "list", REDIS_URL=redis_url)
    assert listed.returncode == 0 and "default" in listed.stdout
    failed = _run("jobs", "failed", REDIS_URL=redis_url)
    assert job.id in failed.stdout and "ValueError" in failed.stdout
    assert _run("jobs", "requeue", "nope", REDIS_URL=redis_url).returncode == 1
    requeued = _run("jobs", "requeue", "--all", REDIS_URL=redis_url)
    assert requeued.returncode == 0 and job.id in requeued.stdout
    assert queue.count == 1
    assert _run("jobs", "remove", job.id, REDIS_URL=redis_url).returncode == 0
    assert _run("jobs", "remove", job.id, REDIS_URL=redis_url).returncode == 1


def test_reminders_run_once_with_nothing_due(settings, database_url, redis_url, emulator):
    from tests.conftest import make_env

    result = _run("reminders", "run-once", **make_env(database_url, redis_url, emulator.url))
    assert result.returncode == 0, result.stderr
    assert "reminder tick done, 0 schedules" in result.stdout


def test_users_show_and_status(engine, database_url, redis_url, redis_conn):
    from sqlalchemy import insert

    from habitbot.models import User
    from habitbot.services.habits import HabitDraft, create_habit

    with engine.begin() as conn:
        uid = conn.execute(insert(User).values(telegram_id=31337, timezone="Asia/Tokyo")
                           .returning(User.id)).scalar_one()
    create_habit(engine, uid, HabitDraft("Secret diary"))
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    shown = _run("users", "show", "31337", **env)
    assert shown.returncode == 0, shown.stderr
    assert "timezone Asia/Tokyo" in shown.stdout and "Secret diary [active]" in shown.stdout
    assert "plan free" in shown.stdout
    missing = _run("users", "show", "42", **env)
    assert missing.returncode == 1 and "no user with Telegram id 42" in missing.stderr
    status = _run("status", **env)
    # no bot heartbeat in this test: the summary says so and exits 1, but still shows counts
    assert status.returncode == 1 and "health: fail" in status.stdout
    assert "bot        FAIL  no heartbeat" in status.stdout
    assert "habits active" in status.stdout and "queue reminders" in status.stdout
    assert re.search(r"replies waiting for Telegram +0\n", status.stdout), status.stdout
    assert re.search(r"payment notices waiting +0\n", status.stdout), status.stdout


def test_status_with_a_dead_database_fails_clearly(pg_proxy, database_url, redis_url):
    pg_proxy.set_mode("refuse")
    result = _run("status", DATABASE_URL=pg_proxy.url_for(database_url), REDIS_URL=redis_url)
    assert result.returncode == 1 and "database   FAIL" in result.stdout


@pytest.mark.parametrize("args", [
    ("users", "show", "abc"), ("users", "show", "-5"), ("users", "show", "1" * 30),
    ("users", "show", "12; DROP TABLE users"), ("payments", "show", "x1"),
    ("payments", "complete", "--provider", "nowhere", "--id", "1"),
])
def test_malformed_ids_are_refused_before_anything_runs(args, database_url, redis_url):
    result = _run(*args, DATABASE_URL=database_url, REDIS_URL=redis_url, BOT_TOKEN="1:x")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and result.stderr.strip()


@pytest.mark.parametrize("args", [("users", "show", "31337"), ("payments", "show", "7"),
                                  ("reminders", "run-once")])
def test_a_dead_database_is_one_clear_line(args, pg_proxy, database_url, redis_url, emulator):
    from tests.conftest import make_env

    pg_proxy.set_mode("refuse")
    env = make_env(pg_proxy.url_for(database_url), redis_url, emulator.url,
                   DB_CONNECT_TIMEOUT="1")
    result = _run(*args, **env)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert "database" in result.stderr.lower()
