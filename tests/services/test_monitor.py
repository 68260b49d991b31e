"""Health monitor: failing checks become alerts (once per cooldown), recoveries too."""

from __future__ import annotations

from sqlalchemy import select

from habitbot.db import make_engine
from habitbot.models import AdminAlert
from habitbot.services import heartbeat
from habitbot.services.alerts import AlertService
from habitbot.services.health import HealthChecker, worker_beat, worker_gone
from habitbot.services.monitor import CONFIRM_SECONDS, HealthMonitor


def _everyone_alive(conn):
    heartbeat.beat(conn, "bot")
    heartbeat.beat(conn, "scheduler")
    worker_beat(conn, "w1")


def test_database_outage_alerts_critical_once_then_recovery(engine, redis_conn, pg_proxy,
                                                           database_url):
    _everyone_alive(redis_conn)
    flaky = make_engine(pg_proxy.url_for(database_url), "cli", connect_timeout=1)
    inbox: list[str] = []
    alerts = AlertService(flaky, redis_conn, lambda chat, text: inbox.append(text), 7)
    monitor = HealthMonitor(HealthChecker(flaky, redis_conn), alerts)
    monitor.run_once()
    assert inbox == []
    pg_proxy.set_mode("refuse")
    monitor.run_once()
    monitor.run_once()
    assert len(inbox) == 1 and inbox[0].startswith("[CRITICAL] health_check database: ")
    pg_proxy.set_mode("pass")
    monitor.run_once()
    assert inbox[1] == "[INFO] health_check database: recovered"
    with engine.connect() as conn:
        rows = conn.execute(select(AdminAlert.fingerprint, AdminAlert.status)
                            .order_by(AdminAlert.raised_at)).all()
    # the outage alert was recorded once the database came back (the repeat inside the
    # cooldown is only counted)
    assert [tuple(r) for r in rows] == [("health_check:database", "sent"),
                                        ("health_check:database:recovered", "sent")]
    flaky.dispose()


def test_stale_scheduler_is_a_warning_and_dead_bot_critical(engine, redis_conn):
    worker_beat(redis_conn, "w1")
    inbox: list[str] = []
    alerts = AlertService(engine, redis_conn, lambda chat, text: inbox.append(text), 7)
    HealthMonitor(HealthChecker(engine, redis_conn), alerts).run_once()
    assert sorted(inbox) == [
        "[CRITICAL] health_check bot: no heartbeat",
        "[WARNING] health_check scheduler: no heartbeat",
    ]


def _watching(engine, redis_conn) -> tuple[HealthMonitor, list[str]]:
    inbox: list[str] = []
    alerts = AlertService(engine, redis_conn, lambda chat, text: inbox.append(text), 7)
    return HealthMonitor(HealthChecker(engine, redis_conn), alerts), inbox


def test_workers_leaving_during_a_stop_of_every_program_are_not_alerted(engine, redis_conn):
    _everyone_alive(redis_conn)
    monitor, inbox = _watching(engine, redis_conn)
    worker_gone(redis_conn, "w1")  # `supervisorctl stop habitbot:*`: the worker stops first
    monitor.run_once(now=1000.0)
    assert inbox == []
    assert monitor.next_pass_in(now=1001.0) == CONFIRM_SECONDS["workers"] - 1
    # ... and the bot, whose monitor this is, is gone before the grace period is over; or
    # it was a restart and the worker is back:
    worker_beat(redis_conn, "w2")
    monitor.run_once(now=1030.0)
    monitor.run_once(now=1100.0)
    assert inbox == []  # neither "0 alive" nor "recovered"


def test_workers_that_stay_down_are_alerted_after_the_grace_period(engine, redis_conn):
    _everyone_alive(redis_conn)
    monitor, inbox = _watching(engine, redis_conn)
    worker_gone(redis_conn, "w1")
    monitor.run_once(now=1000.0)
    monitor.run_once(now=1000.0 + CONFIRM_SECONDS["workers"] / 2)
    assert inbox == []
    monitor.run_once(now=1000.0 + CONFIRM_SECONDS["workers"])
    assert inbox == ["[WARNING] health_check workers: 0 alive, at least 1 expected"]
    assert monitor.next_pass_in(now=1100.0) == 60.0  # alerted: back to the usual pace
    worker_beat(redis_conn, "w1")
    monitor.run_once(now=1120.0)
    assert inbox[1:] == ["[INFO] health_check workers: recovered"]

