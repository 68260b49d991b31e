"""Health checks behind `GET /health`.

Each check runs in a small thread pool with its own deadline, so a hung PostgreSQL or Redis
costs at most that deadline, and the whole answer arrives within `TOTAL_DEADLINE`. A check whose
previous run is still stuck is reported as failing instead of piling up more threads.
`database`, `redis` and `bot` failing make the status `fail` (HTTP 503); `scheduler`, `workers`
and `schema` failing make it `degraded` (HTTP 200: a restart would not fix those).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import Engine, text

from habitbot import metrics
from habitbot.redis_client import KEY_PREFIX
from habitbot.services import heartbeat
from habitbot.services.schema import check_schema

CRITICAL_CHECKS = ("database", "redis", "bot")
TOTAL_DEADLINE = 2.8
WORKERS_KEY = f"{KEY_PREFIX}workers"


@dataclass(frozen=True)
class HealthLimits:
    bot_max_age: float = 90.0
    scheduler_max_age: float = 180.0
    worker_max_age: float = 150.0
    min_workers: int = 1
    schema_cache_seconds: float = 15.0


def worker_beat(conn: redis.Redis, name: str) -> None:
    """Called by each RQ worker on its heartbeat."""
    now = time.time()
    pipe = conn.pipeline()
    pipe.zadd(WORKERS_KEY, {name: now})
    pipe.zremrangebyscore(WORKERS_KEY, 0, now - 3600)
    pipe.execute()


def worker_gone(conn: redis.Redis, name: str) -> None:
    conn.zrem(WORKERS_KEY, name)


class HealthChecker:
    def __init__(self, engine: Engine, redis_conn: redis.Redis,
                 limits: HealthLimits | None = None,
                 queue_lengths: Callable[[], dict[str, int]] | None = None):
        self._engine = engine
        self._redis = redis_conn
        self._queue_lengths = queue_lengths
        self.limits = limits or HealthLimits()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health")
        self._inflight: dict[str, Future] = {}
        self._metrics_write: Future | None = None
        self._lock = threading.Lock()
        self._schema_cache: tuple[float, dict[str, Any]] | None = None

    # -- individual checks: each returns a dict with at least "ok" --------------------------
    def check_database(self) -> dict[str, Any]:
        with self._engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"ok": True}

    def check_redis(self) -> dict[str, Any]:
        self._redis.ping()
        return {"ok": True}

    def _heartbeat_check(self, name: str, max_age: float) -> dict[str, Any]:
        age = heartbeat.age(self._redis, name)
        if age is None:
            return {"ok": False, "error": "no heartbeat"}
        return {"ok": age <= max_age, "age_seconds": round(age, 1), "max_age_seconds": max_age}

    def check_bot(self) -> dict[str, Any]:
        return self._heartbeat_check("bot", self.limits.bot_max_age)

    def check_scheduler(self) -> dict[str, Any]:
        return self._heartbeat_check("scheduler", self.limits.scheduler_max_age)

    def check_workers(self) -> dict[str, Any]:
        alive = self._redis.zcount(WORKERS_KEY, time.time() - self.limits.worker_max_age, "+inf")
        result: dict[str, Any] = {"ok": alive >= self.limits.min_workers, "alive": alive,
                                  "min": self.limits.min_workers}
        if self._queue_lengths is not None:
            result["queued"] = self._queue_lengths()
        return result

    def check_schema(self) -> dict[str, Any]:
        cached = self._schema_cache
        if cached and time.monotonic() - cached[0] < self.limits.schema_cache_seconds:
            return cached[1]
        report = check_schema(self._engine)
        result: dict[str, Any] = {"ok": report.ok, "revision": ",".join(report.current)}
        if not report.ok:
            result["error"] = report.summary
        self._schema_cache = (time.monotonic(), result)
        return result

    # -- running them ------------------------------------------------------------------------
    def _checks(self) -> dict[str, tuple[Callable[[], dict[str, Any]], float]]:
        return {
            "database": (self.check_database, 2.0),
            "redis": (self.check_redis, 1.0),
            "bot": (self.check_bot, 1.0),
            "scheduler": (self.check_scheduler, 1.0),
            "workers": (self.check_workers, 1.0),
            "schema": (self.check_schema, 2.5),
        }

    def _submit(self, name: str, fn: Callable[[], dict[str, Any]]) -> Future | None:
        with self._lock:
            previous = self._inflight.get(name)
            if previous is not None and not previous.done():
                return None
            future = self._pool.submit(self._timed, fn)
            self._inflight[name] = future
            return future

    @staticmethod
    def _timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        started = time.monotonic()
        try:
            result = fn()
        except Exception as exc:  # a failing dependency is a result, not a crash
            result = {"ok": False, "error": _describe(exc)}
        result["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        return result

    def run(self) -> tuple[str, dict[str, dict[str, Any]]]:
        started = time.monotonic()
        futures = {name: (self._submit(name, fn), limit)
                   for name, (fn, limit) in self._checks().items()}
        results: dict[str, dict[str, Any]] = {}
        for name, (future, limit) in futures.items():
            if future is None:
                results[name] = {"ok": False, "error": "previous check still hanging"}
                continue
            remaining = max(0.05, min(limit, TOTAL_DEADLINE - (time.monotonic() - started)))
            try:
                results[name] = future.result(timeout=remaining)
            except FutureTimeout:
                results[name] = {"ok": False, "error": f"timed out after {limit:.1f}s"}
        self._record(results, futures)
        return overall_status(results), results

    def _record(self, results: dict[str, dict[str, Any]],
                futures: dict[str, tuple[Future | None, float]]) -> None:
        """Each check's duration to /metrics, written from the pool so a hanging Redis
        never slows /health down."""
        with self._lock:
            if self._metrics_write is not None and not self._metrics_write.done():
                return  # the last write still hangs: skip this one rather than pile up
            batch = metrics.Batch(self._redis)
            for name, result in results.items():
                seconds = result.get("duration_ms", futures[name][1] * 1000) / 1000
                batch.observe("habitbot_health_check_seconds", seconds, check=name)
            try:
                self._metrics_write = self._pool.submit(batch.flush)
            except RuntimeError:  # shutting down
                pass

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def overall_status(results: dict[str, dict[str, Any]]) -> str:
    if any(not results[name]["ok"] for name in CRITICAL_CHECKS if name in results):
        return "fail"
    if any(not r["ok"] for r in results.values()):
        return "degraded"
    return "ok"


def _describe(exc: Exception) -> str:
    """A short reason that never contains a connection string."""
    name = type(exc).__name__
    orig = getattr(exc, "orig", None)
    detail = str(orig or exc).strip().splitlines()[0] if str(orig or exc).strip() else ""
    if "@" in detail or "password" in detail.lower():
        detail = ""
    return f"{name}: {detail[:160]}" if detail else name
