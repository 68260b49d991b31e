"""Periodic jobs and the scheduler: single-flight, logged, alerted once, paused when DEGRADED,
registered idempotently under fixed ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rq import Queue
from sqlalchemy import select

from habitbot.models import AdminAlert, JobExecutionLog
from tests.support.jobs import run_burst
from workers import maintenance, periodic
from workers.scheduler import (
    PERIODIC_JOBS,
    GuardedScheduler,
    PeriodicJob,
    build_scheduler,
    register_periodic_jobs,
)


def _log(engine):
    with engine.connect() as conn:
        return conn.execute(select(JobExecutionLog.job_name, JobExecutionLog.status,
                                   JobExecutionLog.items, JobExecutionLog.error)
                            .order_by(JobExecutionLog.id)).all()


def test_successful_run_is_logged_with_its_items(runtime, engine):
    assert periodic.run_periodic("demo", lambda rt: 7) == 7
    [row] = _log(engine)
    assert (row.job_name, row.status, row.items, row.error) == ("demo", "success", 7, None)


def test_second_run_while_the_first_holds_the_lock_is_skipped(runtime, engine):
    inner: list[int] = []

    def body(rt):
        inner.append(periodic.run_periodic("demo", lambda rt2: 1))
        return 2

    assert periodic.run_periodic("demo", body) == 2
    assert inner == [0]
    assert [(r.status, r.error) for r in _log(engine)] == [
        ("success", None), ("skipped", "already running")]


def test_failing_job_is_logged_and_alerted_once(runtime, engine):
    def boom(rt):
        raise RuntimeError("kaput")

    for _ in range(3):
        with pytest.raises(RuntimeError):
            periodic.run_periodic("fragile", boom)
    assert [r.status for r in _log(engine)] == ["failed"] * 3
    assert _log(engine)[0].error == "RuntimeError: kaput"
    with engine.connect() as conn:
        statuses = conn.execute(select(AdminAlert.status).where(
            AdminAlert.fingerprint == "job_failed:fragile").order_by(AdminAlert.id)).scalars()
        assert list(statuses) == ["sent"]  # the repeats inside the cooldown write no row
    # the lock was released each time
    assert periodic.run_periodic("fragile", lambda rt: 1) == 1


def test_degraded_mode_skips_jobs(runtime, engine, monkeypatch):
    runtime.guard.state = "degraded"
    assert periodic.run_periodic("demo", lambda rt: 5) == 0
    assert _log(engine) == []


def test_cleanup_and_flush_run_through_a_real_rq_worker(runtime, engine, redis_conn):
    queue = Queue("default", connection=redis_conn)
    job1 = queue.enqueue(maintenance.cleanup)
    job2 = queue.enqueue(maintenance.flush_alerts)
    run_burst(redis_conn, queue.name)
    assert job1.get_status() == "finished" and job2.get_status() == "finished"
    assert sorted(r.job_name for r in _log(engine)) == ["cleanup", "flush_alerts"]


def test_registration_is_idempotent_and_removes_stale_jobs(runtime, redis_conn):
    scheduler = build_scheduler(runtime)
    scheduler.schedule(scheduled_time=datetime.now(UTC),
                       func="workers.maintenance.cleanup", interval=5, id="periodic-retired")
    first = register_periodic_jobs(scheduler)
    second = register_periodic_jobs(scheduler)
    ids = sorted(job.id for job in scheduler.get_jobs())
    assert first == second == ids == sorted(j.job_id for j in PERIODIC_JOBS)


def test_deleted_job_is_recreated_on_restart(runtime, redis_conn):
    scheduler = build_scheduler(runtime)
    register_periodic_jobs(scheduler)
    scheduler.cancel("periodic-cleanup")
    assert "periodic-cleanup" not in scheduler
    register_periodic_jobs(build_scheduler(runtime))
    assert "periodic-cleanup" in scheduler


def test_circuit_breaker_stops_enqueueing_and_keeps_the_heartbeat(runtime, redis_conn):
    from habitbot.services import heartbeat

    scheduler: GuardedScheduler = build_scheduler(runtime)
    register_periodic_jobs(scheduler, (PeriodicJob("now", "workers.maintenance.cleanup", 60),))
    for job in scheduler.get_jobs():
        scheduler.change_execution_time(job, datetime(2000, 1, 1, tzinfo=UTC))
    runtime.guard.state = "degraded"
    assert scheduler.enqueue_jobs() == []
    assert heartbeat.age(redis_conn, "scheduler") is not None
    assert Queue("default", connection=redis_conn).count == 0
    runtime.guard.state = "ok"
    assert len(scheduler.enqueue_jobs()) == 1
    assert Queue("default", connection=redis_conn).count == 1


def test_definitions_lost_with_redis_are_registered_again(runtime, redis_conn):
    """Redis restarted empty: the scheduler's next pass registers the periodic jobs again
    instead of beating on with nothing to run."""
    scheduler: GuardedScheduler = build_scheduler(runtime)
    register_periodic_jobs(scheduler)
    redis_conn.flushdb()
    assert list(scheduler.get_jobs()) == []
    scheduler.enqueue_jobs()
    assert sorted(j.id for j in scheduler.get_jobs()) == sorted(
        job.job_id for job in PERIODIC_JOBS)


def test_payment_poll_is_registered_with_the_interval_the_settings_choose(runtime, redis_conn):
    from dataclasses import replace

    from workers import payment_poll
    from workers.scheduler import periodic_jobs

    jobs = periodic_jobs(replace(runtime.settings, payment_poll_interval=120))
    [job] = [j for j in jobs if j.name == "payment_poll"]
    assert (job.job_id, job.func, job.interval, job.timeout) == (
        "periodic-payment_poll", "workers.payment_poll.tick", 120, payment_poll.JOB_TIMEOUT)
    assert payment_poll.LOCK_TTL > payment_poll.JOB_TIMEOUT
    assert {j.name: j.interval for j in jobs if j.name != "payment_poll"} == {
        j.name: j.interval for j in PERIODIC_JOBS if j.name != "payment_poll"}
    scheduler = build_scheduler(runtime)
    register_periodic_jobs(scheduler, jobs)
    assert "periodic-payment_poll" in scheduler


def test_payment_poll_runs_single_flight_through_a_real_rq_worker(runtime, engine, redis_conn):
    from workers import payment_poll

    queue = Queue("default", connection=redis_conn)
    job = queue.enqueue(payment_poll.tick)
    run_burst(redis_conn, queue.name)
    assert job.get_status() == "finished"
    assert [(r.job_name, r.status) for r in _log(engine)] == [("payment_poll", "success")]
    redis_conn.set("habitbot:lock:job:payment_poll", "another run")
    assert payment_poll.tick() == 0
    assert [r.status for r in _log(engine)] == ["success", "skipped"]
