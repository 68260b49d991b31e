"""The `scheduler` program: registers periodic jobs and moves them into queues on time.

rq-scheduler stays behind this one module. At start every periodic job is (re)registered under
a fixed id, replacing a stale or deleted definition; ids of jobs we no longer have are removed.
Each tick writes the scheduler heartbeat; in DEGRADED mode the circuit breaker stops enqueueing
until the schema is fixed, and a Redis outage is waited out instead of crashing the loop.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import redis
from rq_scheduler import Scheduler

from habitbot.config import Settings
from habitbot.runtime import Runtime, build_runtime
from habitbot.services import heartbeat
from habitbot.services.guard import SchemaGuard
from habitbot.services.health import HealthChecker
from habitbot.services.monitor import HealthMonitor
from workers import queues

log = logging.getLogger(__name__)

ID_PREFIX = "periodic-"
TICK_SECONDS = 5


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    func: str
    interval: int
    queue: str = queues.DEFAULT
    timeout: int = 300
    # Start on a boundary of the interval (which divides a minute), so a 60 s job runs at :00
    # of every minute and a 5 s one at :00, :05, …
    aligned: bool = False

    @property
    def job_id(self) -> str:
        return f"{ID_PREFIX}{self.name}"


PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob("habit_reminders", "workers.reminders.tick", 60, queue=queues.HIGH,
                timeout=120, aligned=True),
    PeriodicJob("weekly_summaries", "workers.summaries.tick", 900),
    PeriodicJob("flush_alerts", "workers.maintenance.flush_alerts", 60),
    PeriodicJob("cleanup", "workers.maintenance.cleanup", 3600),
    # Downgrades ended trials and premium, then tells the users (3 days, 1 day, ended).
    PeriodicJob("premium_notices", "workers.notices.tick", 600),
    # Payment and refund notices a lost or killed drain, or a Telegram outage, left queued.
    PeriodicJob("payment_notices", "workers.notices.sweep_payment_notices", 60,
                queue=queues.HIGH),
    # Asks the providers about open payments whose webhook never came; the interval is
    # PAYMENT_POLL_INTERVAL (see periodic_jobs), the timeout workers.payment_poll.JOB_TIMEOUT.
    PeriodicJob("payment_poll", "workers.payment_poll.tick", 60, timeout=240),
)


def periodic_jobs(settings: Settings) -> tuple[PeriodicJob, ...]:
    """PERIODIC_JOBS with the intervals the settings choose (the defaults are the ones above)."""
    intervals = {"habit_reminders": settings.reminder_tick_interval,
                 "weekly_summaries": settings.weekly_summaries_interval,
                 "flush_alerts": settings.flush_alerts_interval,
                 "cleanup": settings.cleanup_interval,
                 "premium_notices": settings.premium_notices_interval,
                 "payment_notices": settings.payment_notices_interval,
                 "payment_poll": settings.payment_poll_interval}
    return tuple(replace(job, interval=intervals.get(job.name, job.interval))
                 for job in PERIODIC_JOBS)


def register_periodic_jobs(scheduler: Scheduler,
                           jobs: tuple[PeriodicJob, ...] = PERIODIC_JOBS) -> list[str]:
    """Idempotent: the same ids every time, old definitions replaced, unknown ones removed."""
    if isinstance(scheduler, GuardedScheduler):
        scheduler.periodic = jobs
    wanted = {job.job_id for job in jobs}
    for existing in scheduler.get_jobs():
        if existing.id.startswith(ID_PREFIX) and existing.id not in wanted:
            scheduler.cancel(existing)
            existing.delete()
            log.info("periodic job removed", extra={"job_id": existing.id})
    now = datetime.now(UTC)
    for job in jobs:
        if job.job_id in scheduler:
            scheduler.cancel(job.job_id)
        start = next_boundary(now, job.interval) if job.aligned else now + timedelta(seconds=1)
        scheduler.schedule(scheduled_time=start, func=job.func, interval=job.interval,
                           repeat=None, id=job.job_id, queue_name=job.queue,
                           timeout=job.timeout, result_ttl=600)
        log.info("Job added", extra={"job_id": job.job_id, "interval": job.interval})
    return sorted(wanted)


def next_boundary(now: datetime, interval: int) -> datetime:
    """The first instant after `now` that is a whole number of `interval` seconds since the
    epoch: the next minute for 60 (the epoch starts on a minute), the next :05 for 5."""
    seconds = (int(now.timestamp()) // interval + 1) * interval
    return datetime.fromtimestamp(seconds, UTC)


def loop_interval(jobs: tuple[PeriodicJob, ...]) -> int:
    """How often the scheduler looks for jobs to enqueue: every TICK_SECONDS, or as often as
    the shortest interval when that is shorter (a shrunk reminder tick in tests)."""
    return min([TICK_SECONDS, *(job.interval for job in jobs)])


class GuardedScheduler(Scheduler):
    """rq-scheduler with a heartbeat and a circuit breaker."""

    guard: SchemaGuard | None = None
    periodic: tuple[PeriodicJob, ...] = ()  # what register_periodic_jobs set up

    def restore_missing(self) -> None:
        """Redis restarted empty (or someone deleted a definition): register the periodic
        jobs again, rather than let the scheduler beat on with nothing to run. One ZSCORE per
        job: cheap enough for every pass."""
        missing = [job.job_id for job in self.periodic if job.job_id not in self]
        if missing:
            log.warning("periodic jobs missing from Redis: registering them again",
                        extra={"missing": missing})
            register_periodic_jobs(self, self.periodic)

    def enqueue_jobs(self):  # type: ignore[no-untyped-def]
        try:
            heartbeat.beat(self.connection, "scheduler")
            if self.guard is not None and self.guard.degraded:
                log.warning("circuit breaker open: periodic jobs paused (DEGRADED mode)",
                            extra={"reason": self.guard.reason})
                return []
            self.restore_missing()
            jobs = list(self.get_jobs_to_queue())
            for job in jobs:
                self.enqueue_job(job)
            return jobs
        except redis.RedisError as exc:
            log.error("scheduler tick failed: redis unavailable",
                      extra={"error": type(exc).__name__})
            return []

    def heartbeat(self) -> None:
        try:
            super().heartbeat()
        except redis.RedisError:
            pass

    def acquire_lock(self) -> bool:
        try:
            return bool(super().acquire_lock())
        except redis.RedisError:
            return False

    def remove_lock(self) -> None:
        try:
            super().remove_lock()
        except redis.RedisError:
            pass


def build_scheduler(runtime: Runtime, interval: int = TICK_SECONDS) -> GuardedScheduler:
    scheduler = GuardedScheduler(queue_name=queues.DEFAULT, connection=runtime.redis,
                                 interval=interval)
    scheduler.guard = runtime.guard
    return scheduler


def main() -> int:
    runtime = build_runtime("scheduler", "scheduler")
    runtime.guard.start()
    monitor = HealthMonitor(HealthChecker(runtime.engine, runtime.redis), runtime.alerts).start()
    jobs = periodic_jobs(runtime.settings)
    scheduler = build_scheduler(runtime, loop_interval(jobs))
    register_periodic_jobs(scheduler, jobs)
    log.info("Scheduler started", extra={"jobs": [j.job_id for j in jobs],
                                         "degraded": runtime.guard.degraded})
    try:
        scheduler.run()
    except SystemExit:
        log.info("scheduler stopped")
    finally:
        monitor.stop()
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
