"""Reminder fan-out benchmark: one minute tick for thousands of users, sent by real RQ workers
at Telegram's limit without 429s, losses or duplicates, while replies stay fast.

Setup: a throwaway database on the private test cluster with N users (default 9,000), each
with one daily habit whose schedule fired a few seconds ago (loaded with INSERT … SELECT
generate_series); the Telegram emulator in its own process at Telegram's default limits (30
msg/s global, 1 msg/s per chat); W real workers (`rq worker -c workers.rq_settings
-w workers.worker.HabitWorker reminders`, default 2) with TELEGRAM_GLOBAL_RATE=30 and
TELEGRAM_CHAT_RATE=1; a Redis database of the benchmark's own (5 on the private test Redis,
claimed the way test sessions claim theirs), flushed before and after.
This process runs ONE tick (`workers.reminders._tick`) with a runtime of its own; the workers
send the batches it enqueues. Meanwhile a separate process sends interactive-lane replies
through a `Sender` (~2/s) and times them.

Figures (one JSON line each, after a table for people):
- reminders.rate_ratio       sends per second from the first to the last reminder ÷ 30/s
- reminders.429_share        429 answers ÷ sendMessage requests
- reminders.lost             deliveries not 'sent' at the end (of N)
- reminders.duplicated       reminder messages beyond one per chat
- reminders.interactive_p95  95th percentile of a reply's send_message during the burst, s

Ceiling mode (--ceiling): paid-broadcast mode with the limits lifted (emulator 5000 msg/s
global and per chat, TELEGRAM_PAID_BROADCAST=true, TELEGRAM_GLOBAL_RATE=5000 and
TELEGRAM_CHAT_RATE=5000 for the workers) and one tick for
4,500 users (default) is sent with 2 and with 4 workers, one after the other:
- reminders.ceiling_rate_w2, reminders.ceiling_rate_w4   reminders per second, first to last
Where the time goes: the tick's statements are timed in this process (SQLAlchemy cursor
events); the workers are the same RQ command started through this file, which first wraps
start/finish_delivery, render, the limiter, the HTTP call and the job runtime with timers and
appends one record per batch to a Redis list; CPU seconds per process come from /proc.
--plain runs the plain `rq` command instead (no per-batch split); --profile adds the timers
to the default mode; --minute-ticks runs further ticks every 60 s during the burst, as the
scheduler would (the figures then include what their reaper re-enqueues).

Targets that are missed print ok=false; the exit code is non-zero only when the benchmark
could not run. Everything started here is stopped on exit, Ctrl-C or the --timeout.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing as mp
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BENCH_PG_PORT,
    BENCH_REDIS_PORT,
    ROOT,
    SQL_KINDS,
    BenchDatabase,
    BenchError,
    CpuMeter,
    Emulator,
    HardStop,
    Interrupted,
    RedisTarget,
    SqlClock,
    child_env,
    child_pids,
    figure,
    own_redis,
    percentile,
    run_sql,
    stop_process,
    table,
)

TOKEN = "123456:BENCH"
REDIS_DB = 5
DB_NAME = "bench_reminders"
GLOBAL_RATE = 30.0
CHAT_RATE = 1.0
CEILING_RATE = 5000.0
CEILING_USERS = 4500
CEILING_TARGET = 300.0
BULK_CHAT_BASE = 10_000_000
INTERACTIVE_CHAT_BASE = 20_000_000
BATCH_LOG_KEY = "bench:reminder_batches"
ZONES = ("Europe/Moscow", "UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
WORKER_ARGS = ("worker", "-c", "workers.rq_settings", "-w", "workers.worker.HabitWorker",
               "--worker-ttl", "60", "--logging_level", "WARNING", "reminders")
SHIM_FLAG = "--as-rq-worker"
CLEANUP_MARGIN = 25.0  # the hard stop (SIGALRM) comes this long before --timeout
TEARDOWN_MARGIN = 45.0  # a burst is abandoned this long before --timeout


# ---------------------------------------------------------------- data

LOAD_SQL = (
    """
    INSERT INTO users (id, telegram_id, first_name, language, timezone)
    SELECT g, %(chat_base)s + g, 'User ' || g, (ARRAY['ru', 'en'])[1 + g %% 2],
           (%(zones)s::text[])[1 + g %% %(zone_count)s]
    FROM generate_series(1, %(users)s) AS g
    """,
    """
    INSERT INTO habits (id, user_id, name, kind, target_value, target_unit)
    SELECT g, g, 'Habit ' || g,
           CASE WHEN g %% 3 = 0 THEN 'measurable' ELSE 'boolean' END,
           CASE WHEN g %% 3 = 0 THEN 2.5 END,
           CASE WHEN g %% 3 = 0 THEN 'km' END
    FROM generate_series(1, %(users)s) AS g
    """,
    """
    INSERT INTO habit_schedules (id, habit_id, local_time, next_fire_at)
    SELECT g, g, date_trunc('minute', %(fire)s::timestamptz AT TIME ZONE
                            (%(zones)s::text[])[1 + g %% %(zone_count)s])::time,
           %(fire)s
    FROM generate_series(1, %(users)s) AS g
    """,
    "SELECT setval(pg_get_serial_sequence('users', 'id'), %(users)s)",
    "SELECT setval(pg_get_serial_sequence('habits', 'id'), %(users)s)",
    "SELECT setval(pg_get_serial_sequence('habit_schedules', 'id'), %(users)s)",
)

DUE_SQL = (
    "DELETE FROM reminder_deliveries",
    "UPDATE habit_schedules SET next_fire_at = now() - interval '5 seconds'",
)


def load(engine: Any, users: int) -> None:
    from datetime import UTC, datetime, timedelta

    params = {"users": users, "chat_base": BULK_CHAT_BASE, "zones": list(ZONES),
              "zone_count": len(ZONES),
              "fire": datetime.now(UTC) - timedelta(seconds=5)}
    run_sql(engine, LOAD_SQL, params)
    run_sql(engine, ["VACUUM ANALYZE"], autocommit=True)


def make_all_due(engine: Any) -> None:
    """Every schedule fired five seconds ago; no deliveries yet."""
    run_sql(engine, DUE_SQL)


def delivery_counts(engine: Any) -> Counter[str]:
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT status, count(*) FROM reminder_deliveries GROUP BY status")).all()
    return Counter({status: int(count) for status, count in rows})


def delivery_facts(engine: Any) -> dict[str, Any]:
    from sqlalchemy import text

    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT count(*) FILTER (WHERE attempts > 1), max(attempts),"
            " count(DISTINCT schedule_id), count(*),"
            " (SELECT count(*) FROM habit_schedules WHERE next_fire_at <= now())"
            " FROM reminder_deliveries")).one()
    return {"retried": int(row[0] or 0), "max_attempts": int(row[1] or 0),
            "schedules": int(row[2]), "rows": int(row[3]), "unclaimed": int(row[4])}


# ---------------------------------------------------------------- worker timers (shim)

_acc: Counter[str] = Counter()


def _timed(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _acc[name] += time.perf_counter() - started
    return wrapper


def install_worker_timers() -> None:
    """Wrap what a send batch does with timers; one JSON record per batch goes to Redis.
    Installed in the worker before it forks, so every work horse inherits the wrappers."""
    from rq import get_current_job

    import workers.reminders as jobs
    from habitbot.services import reminders as svc
    from habitbot.telegram.client import BotApiClient
    from habitbot.telegram.limiter import RateLimiter
    from habitbot.telegram.sender import Sender
    from workers import context

    for name in dir(svc):  # start_delivery, finish_delivery, … and any batched variant
        if name.startswith(("start_", "finish_", "release_")) and callable(getattr(svc, name)):
            setattr(svc, name, _timed(name, getattr(svc, name)))
    jobs.render = _timed("render", jobs.render)
    jobs.job_runtime = _timed("job_runtime", jobs.job_runtime)
    RateLimiter.acquire = _timed("limiter", RateLimiter.acquire)
    BotApiClient.raw_request = _timed("http", BotApiClient.raw_request)
    Sender.call = _timed("sender", Sender.call)
    original = jobs.send_batch

    @functools.wraps(original)
    def send_batch(delivery_ids: list[int]) -> int:
        _acc.clear()
        job = get_current_job()
        started_wall, started = time.time(), time.perf_counter()
        sent = original(delivery_ids)
        record = {"worker": os.getppid(), "start": started_wall,
                  "seconds": time.perf_counter() - started, "n": len(delivery_ids),
                  "sent": sent, "enqueued": job.enqueued_at.timestamp()
                  if job is not None and job.enqueued_at else None, **_acc}
        context.job_runtime().redis.rpush(BATCH_LOG_KEY, json.dumps(record))
        return sent

    jobs.send_batch = send_batch


def worker_shim(argv: list[str]) -> int:
    """`python bench/reminders_bench.py --as-rq-worker ARGS…` = `rq ARGS…` with timers."""
    sys.path.insert(0, str(ROOT))
    install_worker_timers()
    from rq.cli import main as rq_main

    sys.argv = ["rq", *argv]
    return int(rq_main() or 0)


# ---------------------------------------------------------------- worker processes

def _rq_command() -> list[str]:
    beside = Path(sys.executable).with_name("rq")
    found = str(beside) if beside.exists() else shutil.which("rq")
    if not found:
        raise BenchError("the `rq` command was not found (run `make install`)")
    return [found]


@dataclass
class Workers:
    count: int
    env: dict[str, str]
    timed: bool
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)

    def start(self, redis_conn: Any, timeout: float = 60.0) -> Workers:
        from rq import Worker

        if self.timed:
            command = [sys.executable, str(Path(__file__).resolve()), SHIM_FLAG]
        else:
            command = _rq_command()
        for index in range(self.count):
            log = tempfile.TemporaryFile(mode="w+")
            self.logs.append(log)
            self.procs.append(subprocess.Popen(
                [*command, *WORKER_ARGS, "--name", f"bench-reminders-{os.getpid()}-{index}"],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + timeout
        while len(Worker.all(connection=redis_conn)) < self.count:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise BenchError(f"a worker exited with {proc.returncode}:\n"
                                     f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"workers not registered within {timeout:.0f}s:\n"
                                 f"{self.log_tail()}")
            time.sleep(0.2)
        return self

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for log in self.logs:
            log.flush()
            log.seek(0)
            parts.append(log.read()[-chars:])
        return "\n---\n".join(parts)

    def stop(self) -> None:
        """Warm shutdown (TERM), then cold (a second TERM kills the work horse), then KILL;
        work horses still alive after that (own process groups) are killed by pid."""
        horses = [pid for proc in self.procs if proc.poll() is None
                  for pid in child_pids(proc.pid)]
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            stop_process(proc, grace=5)
        for pid in horses:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for log in self.logs:
            log.close()
        self.logs.clear()


# ---------------------------------------------------------------- interactive replies

def interactive_sender(api_url: str, redis_url: str, rate: float, go: Any, done: Any,
                       results: Any) -> None:
    """Its own process (no GIL shared with the tick): one reply every 1/rate seconds to a
    fresh chat through the interactive lane until `done`; reports (start, latency) pairs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from habitbot.redis_client import make_redis
        from habitbot.telegram.client import BotApiClient
        from habitbot.telegram.limiter import Limits, RateLimiter
        from habitbot.telegram.sender import Sender

        conn = make_redis(redis_url)
        client = BotApiClient(api_url, TOKEN)
        sender = Sender(client, conn,
                        RateLimiter(conn, Limits(global_rate=GLOBAL_RATE, chat_rate=CHAT_RATE)))
        client.raw_request("getMe")
        results.put(("ready", None))
        go.wait()
        samples: list[tuple[float, float]] = []
        errors: Counter[str] = Counter()
        period = 1.0 / rate
        started = time.monotonic()
        tick = 0
        while not done.is_set():
            pause = started + tick * period - time.monotonic()
            if pause > 0:
                done.wait(pause)
                continue
            tick += 1
            wall, t0 = time.time(), time.perf_counter()
            try:
                sender.send_message(INTERACTIVE_CHAT_BASE + tick, f"reply {tick}",
                                    lane="interactive")
                samples.append((wall, time.perf_counter() - t0))
            except Exception as exc:
                errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
        client.close()
        conn.close()
        results.put(("done", {"samples": samples, "errors": dict(errors)}))
    except Exception:
        results.put(("error", traceback.format_exc()))


def _expect(results: Any, kind: str, timeout: float) -> Any:
    try:
        what, payload = results.get(timeout=timeout)
    except queue.Empty:
        raise BenchError(f"the interactive sender did not report {kind!r} in time") from None
    if what == "error":
        raise BenchError(f"the interactive sender failed:\n{payload}")
    if what != kind:
        raise BenchError(f"the interactive sender reported {what!r}, expected {kind!r}")
    return payload


# ---------------------------------------------------------------- the tick, timed here

@dataclass
class TickTimes:
    seconds: float = 0.0
    claim_calls: int = 0
    claim: float = 0.0
    reap: float = 0.0
    enqueue: float = 0.0
    claimed: int = 0
    requeued: int = 0
    sql: dict[str, float] = field(default_factory=dict)
    sql_calls: dict[str, int] = field(default_factory=dict)
    started_wall: float = 0.0


def timed_tick(runtime: Any, clock: SqlClock) -> TickTimes:
    """`workers.reminders._tick(runtime)` with timers around claim_due, reap_expired and
    the enqueueing (restored afterwards)."""
    import workers.reminders as jobs
    from habitbot.services import reminders as svc

    times = TickTimes()
    acc: Counter[str] = Counter()
    originals = {"claim_due": svc.claim_due, "reap_expired": svc.reap_expired,
                 "_enqueue": jobs._enqueue}

    def wrap(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                acc[name] += time.perf_counter() - started
                acc[f"{name}:calls"] += 1
            if name == "reap_expired":
                acc["requeued"] += len(result[0])
            return result
        return wrapper

    svc.claim_due = wrap("claim_due", originals["claim_due"])
    svc.reap_expired = wrap("reap_expired", originals["reap_expired"])
    jobs._enqueue = wrap("_enqueue", originals["_enqueue"])
    clock.reset()
    times.started_wall = time.time()
    started = time.perf_counter()
    try:
        handled = jobs._tick(runtime)
    finally:
        times.seconds = time.perf_counter() - started
        svc.claim_due = originals["claim_due"]
        svc.reap_expired = originals["reap_expired"]
        jobs._enqueue = originals["_enqueue"]
    times.requeued = int(acc["requeued"])
    times.claimed = handled - times.requeued
    times.claim = acc["claim_due"]
    times.claim_calls = int(acc["claim_due:calls"])
    times.reap = acc["reap_expired"]
    times.enqueue = acc["_enqueue"]
    times.sql = dict(clock.seconds)
    times.sql_calls = dict(clock.calls)
    return times


# ---------------------------------------------------------------- one burst

@dataclass
class Setup:
    args: argparse.Namespace
    db: BenchDatabase
    emulator: Emulator
    redis: RedisTarget | None = None
    runtime: Any = None
    clock: SqlClock = field(default_factory=SqlClock)
    worker_env: dict[str, str] = field(default_factory=dict)
    pg_pid: int | None = None
    redis_pid: int | None = None


def _pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pg_members(pid: int | None) -> list[tuple[int, bool]]:
    if pid is None:
        return []
    return [(pid, True), *((child, False) for child in child_pids(pid))]


def burst(s: Setup, workers: int, timed: bool, interactive: bool,
          deadline: float) -> dict[str, Any]:
    """Make every schedule due, start the workers, run one tick, wait until every claimed
    delivery is settled (or the deadline), and collect what happened."""
    from rq import Queue
    from rq.registry import FailedJobRegistry, StartedJobRegistry

    from habitbot.sandbox.emulator_client import EmulatorClient
    from habitbot.telegram.sender import metrics
    from workers import queues

    redis_conn = s.runtime.redis
    redis_conn.flushdb()
    make_all_due(s.runtime.engine)
    with EmulatorClient(s.emulator.url) as control:
        control.reset_stats()
    pool = Workers(workers, s.worker_env, timed)
    proc = None
    ctx = mp.get_context("spawn")
    go, done, results = ctx.Event(), ctx.Event(), ctx.Queue()
    reply: dict[str, Any] = {"samples": [], "errors": {}}
    try:
        pool.start(redis_conn)
        if interactive:
            proc = ctx.Process(target=interactive_sender, name="bench-interactive", daemon=True,
                               args=(s.emulator.url, s.redis.url, s.args.interactive_rate,
                                     go, done, results))
            proc.start()
            _expect(results, "ready", 60)
        emulator_pid = s.emulator.proc.pid if s.emulator.proc else None
        cpu = CpuMeter({
            "this process (tick)": lambda: [(os.getpid(), False)],
            "RQ worker main processes": lambda: [(pid, False) for pid in pool.pids],
            "work horses (send_batch)": lambda: [(pid, None) for pid in pool.pids],
            "Telegram emulator": lambda: [(emulator_pid, False)] if emulator_pid else [],
            "PostgreSQL (cluster)": lambda: _pg_members(s.pg_pid),
            "Redis": lambda: [(s.redis_pid, False)] if s.redis_pid else [],
        }).start()
        go.set()
        tick = timed_tick(s.runtime, s.clock)
        last_tick = time.monotonic()
        later_ticks: list[TickTimes] = []
        reminders_q = Queue(queues.REMINDERS, connection=redis_conn)
        started_reg = StartedJobRegistry(queues.REMINDERS, connection=redis_conn)
        finished = False
        idle_since: float | None = None
        while time.monotonic() < deadline:
            if s.args.minute_ticks and time.monotonic() - last_tick >= 60:
                later_ticks.append(timed_tick(s.runtime, s.clock))
                last_tick = time.monotonic()
            counts = delivery_counts(s.runtime.engine)
            queue_idle = reminders_q.count == 0 and started_reg.count == 0
            if counts["pending"] == 0 and queue_idle:
                finished = True
                break
            # Pending deliveries with no job left to send them wait for a reaper tick.
            if queue_idle and not s.args.minute_ticks:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 10:
                    print(f"WARNING: {counts['pending']} deliveries left pending with no job "
                          "to send them (a later tick's reaper would)", file=sys.stderr)
                    break
            else:
                idle_since = None
            time.sleep(0.5)
        if not finished and idle_since is None:
            print("WARNING: deliveries still pending at the deadline; collecting what was "
                  "sent", file=sys.stderr)
        done.set()
        if proc is not None:
            reply = _expect(results, "done", 30)
            proc.join(10)
        cpu_used = cpu.stop()
        failed_reg = FailedJobRegistry(queues.REMINDERS, connection=redis_conn)
        failed_jobs = []
        for job_id in failed_reg.get_job_ids()[:3]:
            job = reminders_q.fetch_job(job_id)
            if job is not None:
                failed_jobs.append((job.exc_info or "")[-800:])
        with EmulatorClient(s.emulator.url) as control:
            stats = control.stats()
            sends = control.sends()
        batches = [json.loads(raw) for raw in redis_conn.lrange(BATCH_LOG_KEY, 0, -1)]
        sender_metrics = metrics(redis_conn)
        worker_log = pool.log_tail(1500) if failed_jobs else ""
    finally:
        done.set()
        if proc is not None:
            stop_process(proc)
        pool.stop()
    return {
        "workers": workers, "finished": finished, "tick": tick, "later_ticks": later_ticks,
        "stats": stats,
        "sends": sends, "counts": delivery_counts(s.runtime.engine),
        "facts": delivery_facts(s.runtime.engine), "reply": reply, "cpu": cpu_used,
        "batches": batches, "failed_jobs": failed_jobs, "failed_count": len(failed_reg),
        "sender_metrics": sender_metrics, "worker_log": worker_log,
    }


# ---------------------------------------------------------------- analysis

def analyse(r: dict[str, Any], users: int) -> dict[str, Any]:
    bulk_ids = range(BULK_CHAT_BASE + 1, BULK_CHAT_BASE + users + 1)
    messages = [x for x in r["sends"] if x["method"] == "sendMessage"]
    bulk = [x for x in messages if x["chat_id"] in bulk_ids]
    per_chat = Counter(x["chat_id"] for x in bulk)
    out: dict[str, Any] = {
        "bulk_sent": len(bulk),
        "chats": len(per_chat),
        "duplicated": sum(n - 1 for n in per_chat.values() if n > 1),
        "lost": users - r["counts"].get("sent", 0),
    }
    if bulk:
        first = min(x["ts"] for x in bulk)
        last = max(x["ts"] for x in bulk)
        span = last - first
        in_span = [x for x in messages if first <= x["ts"] <= last]
        out.update(first=first, last=last, span=span, in_span=len(in_span),
                   rate=len(in_span) / span if span > 0 else math.nan,
                   bulk_rate=len(bulk) / span if span > 0 else math.nan,
                   first_after_tick=first - r["tick"].started_wall,
                   end_to_end=len(bulk) / (last - r["tick"].started_wall))
    else:
        out.update(first=math.nan, last=math.nan, span=0.0, in_span=0, rate=math.nan,
                   bulk_rate=math.nan, first_after_tick=math.nan, end_to_end=math.nan)
    requests = int(r["stats"]["requests"].get("sendMessage", 0))
    out["requests"] = requests
    out["rate_limited"] = int(r["stats"]["rate_limited"])
    out["share_429"] = out["rate_limited"] / requests if requests else math.nan
    samples = r["reply"]["samples"]
    during = [lat for wall, lat in samples if out["first"] <= wall <= out["last"]]
    out["latencies"] = during
    out["replies_total"] = len(samples)
    return out


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def tick_rows(tick: TickTimes) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("tick wall time, s", tick.seconds),
        ("  claim_due calls / schedules claimed / re-enqueued by the reaper",
         f"{tick.claim_calls} / {tick.claimed} / {tick.requeued}"),
        ("  claimed per second", tick.claimed / tick.seconds if tick.seconds else math.nan),
        ("  in claim_due / reap_expired / enqueue, s",
         f"{tick.claim:.2f} / {tick.reap:.2f} / {tick.enqueue:.2f}"),
    ]
    in_sql = 0.0
    for kind in [k for k, _ in SQL_KINDS] + ["other"]:
        if tick.sql.get(kind):
            in_sql += tick.sql[kind]
            rows.append((f"    SQL {kind} ({tick.sql_calls.get(kind, 0)}x), s", tick.sql[kind]))
    rows.append(("    claim_due outside SQL (ORM, Python, commits), s",
                 tick.claim + tick.reap - in_sql))
    return rows


def batch_rows(batches: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    if not batches:
        return [("per-batch split", "not measured (--plain)")]
    n = sum(b["n"] for b in batches)
    total = sum(b["seconds"] for b in batches)

    def summed(*prefixes: str) -> float:
        return sum(value for b in batches for key, value in b.items()
                   if key.startswith(prefixes) and isinstance(value, float))

    part = {"job_runtime": summed("job_runtime"), "start": summed("start_"),
            "finish": summed("finish_", "release_"), "render": summed("render"),
            "sender": summed("sender"), "limiter": summed("limiter"), "http": summed("http")}
    other_send = part["sender"] - part["limiter"] - part["http"]
    rest = total - part["job_runtime"] - part["start"] - part["finish"] - part["render"] \
        - part["sender"]
    gaps = []
    by_worker: dict[int, list[dict[str, Any]]] = {}
    for b in batches:
        by_worker.setdefault(b["worker"], []).append(b)
    for items in by_worker.values():
        items.sort(key=lambda b: b["start"])
        for prev, nxt in zip(items, items[1:], strict=False):
            ready = max(prev["start"] + prev["seconds"], nxt.get("enqueued") or 0.0)
            gaps.append(max(0.0, nxt["start"] - ready))
    rows: list[tuple[str, Any]] = [
        ("batches / reminders in them", f"{len(batches)} / {n}"),
        ("send_batch wall per batch, ms", _ms(total / len(batches))),
        ("per reminder inside send_batch, ms", _ms(total / n)),
        ("  start_delivery (DB)", _ms(part["start"] / n)),
        ("  render", _ms(part["render"] / n)),
        ("  Sender.call", _ms(part["sender"] / n)),
        ("    limiter acquire (Redis + wait)", _ms(part["limiter"] / n)),
        ("    HTTP to the emulator", _ms(part["http"] / n)),
        ("    blocked check, counters (Redis)", _ms(other_send / n)),
        ("  finish/release_delivery (DB)", _ms(part["finish"] / n)),
        ("  job runtime build (per batch, amortised)", _ms(part["job_runtime"] / n)),
        ("  rest of send_batch", _ms(rest / n)),
        ("between two batches of a worker (fork, RQ), ms",
         f"median {_ms(statistics.median(gaps))}" if gaps else "n/a"),
    ]
    return rows


def cpu_rows(cpu: dict[str, float], reminders: int) -> list[tuple[str, Any]]:
    """Machine and per-component CPU over the burst; per reminder in milliseconds."""
    wall = cpu["wall"]
    cores = cpu["machine total"] / wall if wall else math.nan
    rows: list[tuple[str, Any]] = [
        ("CPU over the burst, cores busy of available",
         f"{cpu['machine busy'] / wall:.2f} of {cores:.0f}"),
        ("CPU per reminder, all of the machine, ms",
         _ms(cpu["machine busy"] / reminders) if reminders else "n/a"),
    ]
    parts = {name: seconds for name, seconds in cpu.items()
             if name not in ("machine busy", "machine total", "wall")}
    parts["anything else on the machine"] = cpu["machine busy"] - sum(parts.values())
    for name, seconds in parts.items():
        per = f", {_ms(seconds / reminders)} ms/reminder" if reminders else ""
        rows.append((f"  {name}, CPU s", f"{seconds:.1f} ({seconds / wall:.2f} cores{per})"))
    return rows


# ---------------------------------------------------------------- the runs

def prepare(s: Setup) -> None:
    """Fill `s` step by step, so that `teardown` can undo whatever was done."""
    from habitbot.config import load_settings
    from habitbot.runtime import build_runtime
    from habitbot.sandbox.services import PostgresCluster, RedisServer

    args = s.args
    global_rate = CEILING_RATE if args.ceiling else GLOBAL_RATE
    chat_rate = CEILING_RATE if args.ceiling else CHAT_RATE
    setup_started = time.monotonic()
    print(f"setting up: database {DB_NAME}, {args.users:,} users …", flush=True)
    s.redis = own_redis(REDIS_DB, ttl=args.timeout + 60)
    s.redis.clean()
    s.db.create()
    if args.ceiling:
        s.emulator.extra_args = ["--global-rate", f"{global_rate:g}", "--chat-rate",
                                 f"{chat_rate:g}", "--chat-burst", f"{chat_rate:g}"]
    s.emulator.start()
    env = child_env()
    for name in ("ALERT_CHAT_ID", "TELEGRAM_PAID_BROADCAST"):  # the shell's, not ours
        env.pop(name, None)
    env.update({"BOT_TOKEN": TOKEN, "DATABASE_URL": s.db.url, "REDIS_URL": s.redis.url,
                "TELEGRAM_API_URL": s.emulator.url,
                "TELEGRAM_GLOBAL_RATE": f"{global_rate:g}",
                "TELEGRAM_CHAT_RATE": f"{chat_rate:g}"})
    if args.ceiling:  # paid-broadcast mode: allow_paid_broadcast, batches of PAID_BATCH_SIZE
        env["TELEGRAM_PAID_BROADCAST"] = "true"
    s.worker_env = env
    s.runtime = build_runtime("bench", "worker", settings=load_settings(env),
                              configure_logging=False)
    s.clock.attach(s.runtime.engine)
    load(s.runtime.engine, args.users)
    s.pg_pid = _pid_file(PostgresCluster("test", BENCH_PG_PORT).data / "postmaster.pid")
    if f"127.0.0.1:{BENCH_REDIS_PORT}/" in s.redis.url:
        s.redis_pid = _pid_file(RedisServer("test", BENCH_REDIS_PORT).dir / "redis.pid")
    print(f"set up in {time.monotonic() - setup_started:.1f}s", flush=True)


def teardown(s: Setup) -> None:
    if s.runtime is not None:
        s.runtime.close()
    s.emulator.stop()
    if s.redis is not None:
        try:
            s.redis.clean()
            s.redis.release()
        except Exception as exc:
            print(f"WARNING: could not flush Redis: {exc}", file=sys.stderr)
    try:
        s.db.drop()
    except Exception as exc:
        print(f"WARNING: could not drop the database {s.db.name}: {exc}", file=sys.stderr)


def run(args: argparse.Namespace, stop: HardStop) -> list[dict[str, Any]]:
    hard_deadline = time.monotonic() + args.timeout - TEARDOWN_MARGIN
    s = Setup(args, BenchDatabase(DB_NAME), Emulator(TOKEN))
    try:
        prepare(s)
        runs = []
        if args.ceiling:
            for workers in args.ceiling_workers:
                print(f"ceiling: {workers} workers …", flush=True)
                r = burst(s, workers, timed=not args.plain, interactive=False,
                          deadline=hard_deadline)
                r["analysis"] = analyse(r, args.users)
                runs.append(r)
        else:
            print(f"burst: {args.workers} workers, one tick, replies at "
                  f"{args.interactive_rate:g}/s …", flush=True)
            r = burst(s, args.workers, timed=args.profile, interactive=True,
                      deadline=hard_deadline)
            r["analysis"] = analyse(r, args.users)
            runs.append(r)
        return runs
    finally:
        stop.shield()
        teardown(s)


def _common_rows(r: dict[str, Any], users: int) -> list[tuple[str, Any]]:
    a = r["analysis"]
    counts = r["counts"]
    facts = r["facts"]
    rows: list[tuple[str, Any]] = [
        ("reminders due / workers", f"{users:,} / {r['workers']}"),
        ("all settled before the deadline", "yes" if r["finished"] else "NO"),
        ("deliveries by status", dict(counts) or "none"),
        ("schedules left unclaimed by the tick", facts["unclaimed"]),
        ("deliveries started more than once", facts["retried"]),
        ("first reminder after the tick started, s", a["first_after_tick"]),
        ("first..last reminder, s", a["span"]),
        ("sends in that span (all lanes)", a["in_span"]),
        ("achieved rate, msg/s", a["rate"]),
        ("  of which reminders, msg/s", a["bulk_rate"]),
        ("reminders / (last send - tick start), msg/s", a["end_to_end"]),
        ("max sends in any 1 s", r["stats"].get("max_sent_in_1s")),
        ("sendMessage requests / 429 answers", f"{a['requests']} / {a['rate_limited']}"),
        ("reminder messages / chats reached", f"{a['bulk_sent']} / {a['chats']}"),
        ("lost / duplicated", f"{a['lost']} / {a['duplicated']}"),
    ]
    if r["later_ticks"]:
        later = r["later_ticks"]
        rows.append(("later minute ticks: count / re-enqueued by the reaper / claimed",
                     f"{len(later)} / {sum(t.requeued for t in later)} / "
                     f"{sum(t.claimed for t in later)}"))
    if r["failed_count"]:
        rows.append(("failed RQ jobs", r["failed_count"]))
    if r["stats"].get("errors"):
        rows.append(("emulator errors", r["stats"]["errors"]))
    return rows


def _print_failures(r: dict[str, Any]) -> None:
    for exc_info in r["failed_jobs"]:
        print(f"failed job:\n{exc_info}", file=sys.stderr)
    if r["worker_log"]:
        print(f"worker log:\n{r['worker_log']}", file=sys.stderr)


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    if args.ceiling:
        for r in runs:
            _print_failures(r)
            rows = _common_rows(r, args.users) + tick_rows(r["tick"]) + batch_rows(
                r["batches"]) + cpu_rows(r["cpu"], r["analysis"]["bulk_sent"])
            table(rows, f"reminder ceiling, {r['workers']} workers (limits lifted to "
                        f"{CEILING_RATE:g} msg/s)")
        for r in runs:
            figure(f"reminders.ceiling_rate_w{r['workers']}", r["analysis"]["bulk_rate"],
                   "msg/s", f">= {CEILING_TARGET:g}")
        return
    r = runs[0]
    _print_failures(r)
    a = r["analysis"]
    lat = a["latencies"]
    counts = r["sender_metrics"]
    rows = _common_rows(r, args.users) + [
        ("rate / limit", a["rate"] / GLOBAL_RATE),
        ("429 share", a["share_429"]),
        ("replies sent (during the burst)", f"{a['replies_total']} ({len(lat)})"),
        ("reply p50 / p95 / max, s",
         " / ".join(f"{v:.3f}" for v in (percentile(lat, 50), percentile(lat, 95),
                                          max(lat, default=math.nan)))),
        ("limiter wait, bulk / interactive, s",
         f"{counts.get('bulk:wait_ms', 0) / 1000:.1f} / "
         f"{counts.get('interactive:wait_ms', 0) / 1000:.2f}"),
    ]
    if r["reply"]["errors"]:
        rows.append(("reply failures", r["reply"]["errors"]))
    rows += tick_rows(r["tick"]) + (batch_rows(r["batches"]) if r["batches"] else []) \
        + cpu_rows(r["cpu"], a["bulk_sent"])
    table(rows, f"reminder fan-out ({GLOBAL_RATE:g} msg/s global, {CHAT_RATE:g} msg/s per "
                f"chat, one tick, {r['workers']} RQ workers)")

    figure("reminders.rate_ratio", a["rate"] / GLOBAL_RATE, "ratio", ">= 0.97")
    figure("reminders.429_share", a["share_429"], "ratio", "<= 0.001")
    figure("reminders.lost", a["lost"], "deliveries", "== 0")
    figure("reminders.duplicated", a["duplicated"], "messages", "== 0")
    figure("reminders.interactive_p95", percentile(lat, 95), "s", "<= 1.0")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=None,
                        help="users with one due reminder each (default 9000: 300 s at 30/s; "
                             f"{CEILING_USERS} with --ceiling)")
    parser.add_argument("--workers", type=int, default=2, help="RQ worker processes")
    parser.add_argument("--interactive-rate", type=float, default=2.0,
                        help="interactive replies per second during the burst")
    parser.add_argument("--ceiling", action="store_true",
                        help="lift the limits and measure the pipeline's own throughput")
    parser.add_argument("--ceiling-workers", default="2,4",
                        help="worker counts measured in --ceiling mode (default 2,4)")
    parser.add_argument("--plain", action="store_true",
                        help="--ceiling with the plain rq command (no per-batch timers)")
    parser.add_argument("--minute-ticks", action="store_true",
                        help="also run the tick every 60 s during the burst, as the scheduler "
                             "does (its reaper re-enqueues deliveries whose lease ran out)")
    parser.add_argument("--profile", action="store_true",
                        help="without --ceiling: start the workers with per-batch timers too")
    parser.add_argument("--timeout", type=float, default=None,
                        help="hard limit of the whole run, seconds (default: users/30 + 120, "
                             "or 180 with --ceiling)")
    args = parser.parse_args(argv)
    if args.users is None:
        args.users = CEILING_USERS if args.ceiling else 9000
    if args.users < 1 or args.workers < 1 or args.interactive_rate <= 0:
        parser.error("--users, --workers and --interactive-rate must be positive")
    try:
        args.ceiling_workers = [int(n) for n in args.ceiling_workers.split(",") if n.strip()]
    except ValueError:
        parser.error("--ceiling-workers: a comma-separated list of numbers")
    if not args.ceiling_workers or min(args.ceiling_workers) < 1:
        parser.error("--ceiling-workers: positive numbers")
    if args.timeout is None:
        args.timeout = 180.0 if args.ceiling else args.users / GLOBAL_RATE + 120.0
    if args.timeout <= TEARDOWN_MARGIN + 15:
        parser.error(f"--timeout must be above {TEARDOWN_MARGIN + 15:.0f}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [SHIM_FLAG]:
        return worker_shim(argv[1:])
    args = parse_args(argv)
    if args.ceiling:
        print(f"expected: ~{len(args.ceiling_workers) * (args.users / CEILING_TARGET + 12):.0f}"
              f" s at the {CEILING_TARGET:g} msg/s target, more below it ({args.users:,} "
              f"reminders with {args.ceiling_workers} workers); hard limit "
              f"{args.timeout:.0f} s", flush=True)
    else:
        print(f"expected: ~{args.users / GLOBAL_RATE + 25:.0f} s ({args.users:,} reminders at "
              f"{GLOBAL_RATE:g}/s = {args.users / GLOBAL_RATE:.0f} s, plus setup), hard limit "
              f"{args.timeout:.0f} s", flush=True)
    stop = HardStop(args.timeout - CLEANUP_MARGIN).arm()
    try:
        runs = run(args, stop)
    except Interrupted as exc:
        reason = "timed out" if str(exc) == "SIGALRM" else f"interrupted ({exc})"
        print(f"reminders benchmark {reason}", file=sys.stderr)
        return HardStop.exit_code(exc)
    except BenchError as exc:
        print(f"reminders benchmark could not run: {exc}", file=sys.stderr)
        return 1
    finally:
        stop.shield()
    report(runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
