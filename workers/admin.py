"""Operator views of the queues: counts, failed jobs, requeue, removal (used by the CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq_scheduler import Scheduler

from workers import queues
from workers.scheduler import ID_PREFIX


@dataclass(frozen=True)
class QueueCounts:
    name: str
    queued: int
    started: int
    failed: int


@dataclass(frozen=True)
class FailedJob:
    id: str
    queue: str
    func: str
    ended_at: datetime | None
    error: str


def counts(conn: redis.Redis) -> list[QueueCounts]:
    out = []
    for name in queues.ALL:
        queue = Queue(name, connection=conn)
        out.append(QueueCounts(name, queue.count,
                               StartedJobRegistry(queue=queue).count,
                               FailedJobRegistry(queue=queue).count))
    return out


def periodic(conn: redis.Redis) -> list[tuple[str, datetime, int | None]]:
    scheduler = Scheduler(connection=conn)
    jobs = []
    for job, when in scheduler.get_jobs(with_times=True):
        if job.id.startswith(ID_PREFIX):
            jobs.append((job.id, when, job.meta.get("interval")))
    return sorted(jobs)


def failed(conn: redis.Redis, limit: int | None = None) -> list[FailedJob]:
    """Failed jobs of every queue with the last line of their error; at most `limit` per
    queue (all when None)."""
    out = []
    for name in queues.ALL:
        registry = FailedJobRegistry(queue=Queue(name, connection=conn))
        for job_id in registry.get_job_ids(0, -1 if limit is None else limit - 1):
            try:
                job = Job.fetch(job_id, connection=conn)
            except NoSuchJobError:
                continue
            result = job.latest_result()
            error = ((result.exc_string if result else None) or "").strip().splitlines()
            out.append(FailedJob(job.id, name, job.func_name or "?", job.ended_at,
                                 error[-1][:300] if error else ""))
    return out


def requeue(conn: redis.Redis, job_id: str | None) -> list[str]:
    """Requeue one failed job (by id) or all of them (None)."""
    done = []
    for name in queues.ALL:
        registry = FailedJobRegistry(queue=Queue(name, connection=conn))
        for candidate in registry.get_job_ids():
            if job_id is None or candidate == job_id:
                registry.requeue(candidate)
                done.append(candidate)
    return done


def remove(conn: redis.Redis, job_id: str) -> bool:
    """Remove a periodic job from the scheduler (the running scheduler registers it again,
    fresh, within seconds: `GuardedScheduler.restore_missing`) or delete any other job."""
    scheduler = Scheduler(connection=conn)
    if job_id in scheduler:
        scheduler.cancel(job_id)
        return True
    try:
        Job.fetch(job_id, connection=conn).delete()
    except NoSuchJobError:
        return False
    return True
