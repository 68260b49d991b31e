"""Periodic jobs: single-flight, logged in `job_execution_log`, paused in DEGRADED mode.

A job that is already running (a slow tick, a second scheduler) is skipped rather than run
twice, thanks to a Redis lock with a TTL. Each run leaves one row: start, end, status, item
count and error. A failure is alerted once per fingerprint (the alert cooldown), not every
minute.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from rq import get_current_job
from sqlalchemy import insert, update
from sqlalchemy.exc import SQLAlchemyError

from habitbot import metrics
from habitbot.models import JobExecutionLog
from habitbot.redis_client import KEY_PREFIX
from habitbot.runtime import Runtime
from workers import context

log = logging.getLogger(__name__)

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _log_start(runtime: Runtime, name: str, job_id: str | None) -> int | None:
    try:
        with runtime.engine.begin() as conn:
            return conn.execute(insert(JobExecutionLog).values(
                job_name=name, job_id=job_id, status="running",
                started_at=datetime.now(UTC)).returning(JobExecutionLog.id)).scalar_one()
    except SQLAlchemyError:
        log.warning("job log unavailable", extra={"job": name})
        return None


def _log_end(runtime: Runtime, row_id: int | None, status: str, items: int,
             error: str | None) -> None:
    if row_id is None:
        return
    try:
        with runtime.engine.begin() as conn:
            conn.execute(update(JobExecutionLog).where(JobExecutionLog.id == row_id).values(
                status=status, items=items, error=error, finished_at=datetime.now(UTC)))
    except SQLAlchemyError:
        log.warning("job log unavailable", extra={"job_log_id": row_id})


def _record_skip(runtime: Runtime, name: str, job_id: str | None, reason: str) -> None:
    row_id = _log_start(runtime, name, job_id)
    _log_end(runtime, row_id, "skipped", 0, reason)


def _timed(runtime: Runtime, name: str, status: str, started: float) -> None:
    with metrics.Batch(runtime.redis) as batch:
        batch.incr("habitbot_job_runs_total", job=name, status=status)
        batch.observe("habitbot_job_duration_seconds", time.monotonic() - started, job=name,
                      status=status)


def run_periodic(name: str, body: Callable[[Runtime], int], lock_ttl: int = 300) -> int:
    """Run `body(runtime)` once across all processes; returns the items it handled."""
    runtime = context.job_runtime()
    job = get_current_job()
    job_id = job.id if job else None
    if context.parent_degraded() or runtime.guard.degraded:
        log.warning("job skipped: DEGRADED mode", extra={"job": name})
        metrics.incr(runtime.redis, "habitbot_job_runs_total", job=name, status="degraded")
        return 0
    token = uuid.uuid4().hex
    lock_key = f"{KEY_PREFIX}lock:job:{name}"
    if not runtime.redis.set(lock_key, token, nx=True, ex=lock_ttl):
        log.info("job skipped: already running", extra={"job": name})
        _record_skip(runtime, name, job_id, "already running")
        metrics.incr(runtime.redis, "habitbot_job_runs_total", job=name, status="skipped")
        return 0
    row_id = _log_start(runtime, name, job_id)
    started = time.monotonic()
    try:
        items = body(runtime)
    except Exception as exc:
        _timed(runtime, name, "failed", started)
        log.exception("Job failed", extra={"job": name, "job_id": job_id})
        _log_end(runtime, row_id, "failed", 0, f"{type(exc).__name__}: {exc}"[:2000])
        runtime.alerts.raise_alert("WARNING", f"job {name}", f"failed: {type(exc).__name__}",
                                   fingerprint=f"job_failed:{name}")
        raise
    finally:
        runtime.redis.eval(_RELEASE, 1, lock_key, token)
    _log_end(runtime, row_id, "success", items, None)
    _timed(runtime, name, "success", started)
    log.info("job finished", extra={"job": name, "items": items, "pid": os.getpid()})
    return items
