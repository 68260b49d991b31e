"""The whole program group under supervisord: start, health, the schema-drift drill (seed 1.0),
restart, stop. Real processes, real PostgreSQL and Redis, the Telegram emulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from alembic import command
from rq import Queue
from sqlalchemy import update

from habitbot.db import make_engine
from habitbot.models import User
from habitbot.services import schema
from habitbot.services.habits import HabitDraft, create_habit
from habitbot.services.schema import alembic_config_for, run_deploy_gate
from tests.conftest import ALERT_CHAT, make_env, redis_db
from tests.e2e.stack import Stack, wait_until

# The stack starts, drifts, recovers, restarts and waits for a reminder's minute: minutes.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PROGRAMS = {"habitbot:bot", "habitbot:web", "habitbot:worker-0", "habitbot:worker-1",
            "habitbot:scheduler"}
USER = 5005


@pytest.fixture
def stack(tmp_path, scratch_database, redis_url, emulator, emu_client):
    engine = make_engine(scratch_database, "cli")
    run_deploy_gate(engine)
    engine.dispose()
    e2e_redis = redis_db(redis_url, 1)
    conn = redis.Redis.from_url(e2e_redis)
    conn.flushdb()
    env = make_env(scratch_database, e2e_redis, emulator.url, SCHEMA_CHECK_INTERVAL="2")
    running = Stack(tmp_path, env).start()
    yield running
    running.stop()
    conn.flushdb()
    conn.close()


def _all_running(stack: Stack) -> bool:
    statuses = stack.statuses()
    return set(statuses) == PROGRAMS and set(statuses.values()) == {"RUNNING"}


def _alerts(emu_client, needle: str) -> list[str]:
    return [m["text"] for m in emu_client.transcript(ALERT_CHAT).get("messages", [])
            if needle in (m.get("text") or "")]


def _ask(emu_client, text: str) -> str:
    sent = emu_client.inject_message(USER, text)
    return emu_client.wait_for_message(USER, after_message_id=sent["message_id"],
                                       timeout=30)["text"]


def test_stack_starts_serves_survives_drift_and_restarts(stack, emu_client, scratch_database):
    emu_client.add_user(USER, first_name="Eve", language_code="en")
    wait_until(lambda: _all_running(stack), 60, "all programs RUNNING")
    status, body = wait_until(lambda: (lambda r: r if r[0] == 200 and r[1]["status"] == "ok"
                                       else None)(stack.health()), 60, "/health ok")
    assert body["checks"]["workers"]["alive"] == 2
    assert "Hi, Eve" in _ask(emu_client, "/start")
    pids = stack.pids()

    # Seed incident 1.0: a deploy skipped its migration.
    command.downgrade(alembic_config_for(scratch_database), "-1")
    body = wait_until(lambda: (lambda b: b if not b.get("checks", {}).get("schema", {}).get(
        "ok", True) else None)(stack.health()[1]), 45, "/health schema failing")
    assert body["status"] == "degraded", body
    assert f"revision {schema.revision_below_head()}" in body["checks"]["schema"]["error"]
    wait_until(lambda: "DEGRADED mode" in stack.log("bot"), 30, "bot degraded")
    assert "temporarily unavailable" in _ask(emu_client, "/help")
    wait_until(lambda: "circuit breaker open" in stack.log("scheduler"), 30,
               "scheduler circuit breaker")
    assert len(wait_until(lambda: _alerts(emu_client, "DEGRADED mode"), 30, "alert")) == 1
    assert stack.pids() == pids, "no process restarted: no crash loop"

    result = stack.habitbot("deploy-gate")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: stack.health()[1].get("status") == "ok", 45, "/health ok again")
    wait_until(lambda: "left DEGRADED mode" in stack.log("bot"), 30, "bot recovered")
    assert "temporarily unavailable" not in _ask(emu_client, "/help")
    assert len(_alerts(emu_client, "[CRITICAL] schema: DEGRADED mode")) == 1
    assert len(wait_until(lambda: _alerts(emu_client, "left DEGRADED mode"), 30,
                          "recovery alert")) == 1

    # supervisorctl restart habitbot:* brings everything back, and a job in hand finishes.
    conn = redis.Redis.from_url(stack.env["REDIS_URL"])
    in_hand = Queue("default", connection=conn).enqueue("time.sleep", 4, job_timeout=60)
    wait_until(lambda: in_hand.get_status(refresh=True) == "started", 30, "job started")
    stack.ctl("restart", "habitbot:*")
    assert in_hand.get_status(refresh=True) == "finished"
    conn.close()
    wait_until(lambda: _all_running(stack), 90, "all programs RUNNING after restart")
    assert stack.pids() != pids
    wait_until(lambda: stack.health()[0] == 200, 60, "/health 200 after restart")
    assert "Hi, Eve" in _ask(emu_client, "/start")
    for name in ("bot", "scheduler"):
        assert "Startup complete" in stack.log("bot") or name != "bot"
    assert "Scheduler started" in stack.log("scheduler")

    # A reminder for the next minute arrives within that minute (scheduler → worker → bot API).
    engine = make_engine(scratch_database, "cli")
    with engine.begin() as conn:
        user_id = conn.execute(update(User).where(User.telegram_id == USER).values(
            timezone="UTC").returning(User.id)).scalar_one()
    at = (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    if (at - datetime.now(UTC)).total_seconds() < 3:
        at += timedelta(minutes=1)
    create_habit(engine, user_id, HabitDraft("Stretch", reminder_times=[at.time()]))
    engine.dispose()
    reminder = emu_client.wait_for_message(
        USER, lambda m: m["text"].startswith("⏰"), timeout=max(
            10.0, (at - datetime.now(UTC)).total_seconds() + 60))
    assert reminder["text"] == f"⏰ {at.strftime('%H:%M')} · Stretch"
    assert reminder["sent_at"] - at.timestamp() < 60
    assert "BOT_TOKEN" not in stack.log("bot") and "TEST-TOKEN" not in stack.log("bot")
