"""GET /health against real PostgreSQL and Redis, with dependencies failing on purpose."""

from __future__ import annotations

import time

import pytest
from alembic import command

from habitbot.config import load_settings
from habitbot.db import make_engine
from habitbot.services import heartbeat, schema
from habitbot.services.health import worker_beat
from habitbot.services.schema import alembic_config_for, run_deploy_gate
from tests.conftest import make_env
from webhooks.app import create_app


def _app(database_url, redis_url, **extra):
    env = make_env(database_url, redis_url, "http://127.0.0.1:9", **extra)
    app = create_app(load_settings(env), configure_logging=False)
    return app


@pytest.fixture
def alive(redis_conn):
    """Every process reported recently."""
    heartbeat.beat(redis_conn, "bot")
    heartbeat.beat(redis_conn, "scheduler")
    worker_beat(redis_conn, "worker-1")
    return redis_conn


def _get(app):
    with app.test_client() as client:
        response = client.get("/health")
    return response.status_code, response.get_json()


def test_all_healthy_is_ok(database_url, redis_url, alive):
    status, body = _get(_app(database_url, redis_url))
    assert status == 200 and body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "bot", "scheduler", "workers", "schema"}
    assert all(c["ok"] for c in body["checks"].values())
    assert body["checks"]["workers"]["alive"] == 1
    assert body["checks"]["workers"]["queued"] == {"high": 0, "default": 0, "reminders": 0,
                                                   "files": 0}


def test_missing_bot_heartbeat_fails_with_503(database_url, redis_url, redis_conn):
    heartbeat.beat(redis_conn, "scheduler")
    worker_beat(redis_conn, "w")
    status, body = _get(_app(database_url, redis_url))
    assert status == 503 and body["status"] == "fail"
    assert body["checks"]["bot"] == {"ok": False, "error": "no heartbeat",
                                     "duration_ms": body["checks"]["bot"]["duration_ms"]}


def test_stale_scheduler_and_no_workers_are_degraded_not_fail(database_url, redis_url,
                                                              redis_conn):
    heartbeat.beat(redis_conn, "bot")
    heartbeat.beat(redis_conn, "scheduler", now=time.time() - 600)
    status, body = _get(_app(database_url, redis_url))
    assert status == 200 and body["status"] == "degraded"
    assert body["checks"]["scheduler"]["ok"] is False
    assert body["checks"]["scheduler"]["age_seconds"] >= 599
    workers = body["checks"]["workers"]
    assert (workers["ok"], workers["alive"], workers["min"]) == (False, 0, 1)


def test_database_down_is_503_and_hides_the_url(database_url, redis_url, alive, pg_proxy):
    url = pg_proxy.url_for(database_url).replace("postgres@", "postgres:topsecret@")
    app = _app(url, redis_url, DB_CONNECT_TIMEOUT="1")
    pg_proxy.set_mode("refuse")
    status, body = _get(app)
    assert status == 503 and body["checks"]["database"]["ok"] is False
    assert "topsecret" not in str(body)


def test_database_back_without_restart(database_url, redis_url, alive, pg_proxy):
    app = _app(pg_proxy.url_for(database_url), redis_url, DB_CONNECT_TIMEOUT="1")
    assert _get(app)[0] == 200
    pg_proxy.set_mode("refuse")
    assert _get(app)[0] == 503
    pg_proxy.set_mode("pass")
    status, body = _get(app)
    assert status == 200, body


def test_hung_database_answers_within_the_deadline(database_url, redis_url, alive, pg_proxy):
    app = _app(pg_proxy.url_for(database_url), redis_url, DB_CONNECT_TIMEOUT="10")
    pg_proxy.set_mode("hang")
    status, body = _get(app)
    assert status == 503
    assert body["checks"]["database"]["error"].startswith("timed out")
    # A second poll while the first check is still stuck does not pile up threads.
    status, body = _get(app)
    assert body["checks"]["database"]["error"] in ("previous check still hanging",
                                                   "timed out after 2.0s")


def test_redis_down_is_503(database_url, redis_url, alive, redis_proxy):
    app = _app(database_url, redis_proxy.url_for(redis_url))
    redis_proxy.set_mode("refuse")
    status, body = _get(app)
    assert status == 503
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["bot"]["ok"] is False


def test_schema_drift_is_degraded_with_the_reason(scratch_database, redis_url, alive):
    eng = make_engine(scratch_database, "cli")
    run_deploy_gate(eng)
    eng.dispose()
    command.downgrade(alembic_config_for(scratch_database), "-1")
    status, body = _get(_app(scratch_database, redis_url))
    assert status == 200 and body["status"] == "degraded"
    below = schema.revision_below_head()
    assert f"database is at revision {below}" in body["checks"]["schema"]["error"]
