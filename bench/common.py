"""Shared helpers of the benchmarks under bench/; running this file does nothing.

- `figure()` prints one result as a JSON line: {"bench", "value", "unit", "target", "ok"}.
- `meets()` checks a value against a target written as "<op> <number>" (">= 0.97").
- `percentile()` with linear interpolation between the closest ranks.
- `Emulator` runs the Telegram emulator as a separate process on a free port.
- `find_redis()` picks the Redis a benchmark may use and clean.
- `stop_process()` ends a child process: SIGTERM, then SIGKILL after a grace period.
- `own_redis()` a Redis database of the benchmark's own (on the private test Redis, its block
  claimed the way test sessions claim theirs), flushed before and after.
- `BenchDatabase` a throwaway PostgreSQL database on the private test cluster, at head;
  `run_sql()` runs driver-level SQL on an engine (VACUUM in autocommit).
- `HardStop` ends a run on Ctrl-C, SIGTERM or an overall timeout, and lets cleanup finish.
- `SqlClock` times the statements of an engine by kind (claim, lookups, insert, update).
- `CpuMeter` CPU seconds of the machine and of given processes between two readings.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCH_REDIS_PORT = 56380
BENCH_REDIS_DB = 4
BENCH_PG_PORT = 55432


class BenchError(RuntimeError):
    """The benchmark itself could not run (as opposed to a figure missing its target)."""


# ---------------------------------------------------------------- figures

_OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
}


def meets(value: float | None, target: str) -> bool:
    """Whether `value` satisfies `target` such as ">= 0.97", "<= 1.0" or "== 0"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    op, _, number = target.strip().partition(" ")
    if op not in _OPS:
        raise ValueError(f"target {target!r}: expected '<op> <number>', op one of {list(_OPS)}")
    return bool(_OPS[op](value, float(number)))


def figure(name: str, value: float | None, unit: str, target: str) -> dict[str, Any]:
    """Print one figure as a JSON line and return it."""
    if isinstance(value, float):
        value = round(value, 4) if math.isfinite(value) else None
    line = {"bench": name, "value": value, "unit": unit, "target": target,
            "ok": meets(value, target)}
    print(json.dumps(line), flush=True)
    return line


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), interpolating linearly; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def table(rows: Sequence[tuple[str, Any]], title: str | None = None) -> None:
    """Print name/value rows aligned, for people; the JSON lines are for machines."""
    if title:
        print(title)
    width = max((len(name) for name, _ in rows), default=0)
    for name, value in rows:
        if isinstance(value, float):
            value = f"{value:.4g}" if math.isfinite(value) else "n/a"
        print(f"  {name:<{width}}  {value}")
    sys.stdout.flush()


# ---------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    """The environment of child Python processes: the repository importable."""
    env = dict(os.environ)
    paths = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def stop_process(proc: subprocess.Popen | Any, grace: float = 5.0) -> None:
    """Terminate a `subprocess.Popen` or `multiprocessing.Process`; kill it if it lingers."""
    if isinstance(proc, subprocess.Popen):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(grace)
        return
    if proc.is_alive():
        proc.terminate()
        proc.join(grace)
        if proc.is_alive():
            proc.kill()
            proc.join(grace)


@dataclass
class Emulator:
    """`python -m habitbot.sandbox.telegram_emulator` in its own process (own GIL)."""

    token: str = "123456:BENCH"
    extra_args: Sequence[str] = ()
    port: int = 0
    proc: subprocess.Popen | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Emulator:
        from habitbot.sandbox.emulator_client import EmulatorClient

        self.port = self.port or free_port()
        self._log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "habitbot.sandbox.telegram_emulator", "--host", "127.0.0.1",
             "--port", str(self.port), "--token", self.token, "--log-level", "WARNING",
             *self.extra_args],
            cwd=ROOT, env=child_env(), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        with EmulatorClient(self.url, timeout=1.0) as control:
            while True:
                if self.proc.poll() is not None:
                    raise BenchError(f"the emulator exited with {self.proc.returncode}:\n"
                                     f"{self.log_tail()}")
                try:
                    if control.health():
                        return self
                except Exception:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"the emulator did not answer within {timeout:.0f}s:\n"
                                     f"{self.log_tail()}")
                time.sleep(0.1)

    def log_tail(self, chars: int = 2000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-chars:]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ---------------------------------------------------------------- Redis

@dataclass
class RedisTarget:
    url: str
    # True: a database of the benchmark's own, emptied before and after. False: someone
    # else's (REDIS_URL), where only the keys a benchmark names are deleted.
    flushable: bool
    # own_redis(): the test-session claim taken for the block holding the database.
    claim_key: str | None = None
    claim_token: str | None = None

    def release(self) -> None:
        """Give the claimed block back (only if the claim is still ours)."""
        if self.claim_key is None:
            return
        from habitbot.redis_client import make_redis

        conn = make_redis(_CLAIM_URL)
        try:
            conn.eval(_RELEASE_CLAIM, 1, self.claim_key, self.claim_token)
        finally:
            conn.close()
        self.claim_key = None

    def connect(self):
        from habitbot.redis_client import make_redis

        return make_redis(self.url)

    def clean(self, keys: Sequence[str] = (), patterns: Sequence[str] = ()) -> None:
        """Empty an own database; in someone else's, delete `keys` and keys matching
        `patterns` only."""
        conn = self.connect()
        try:
            if self.flushable:
                conn.flushdb()
                return
            for start in range(0, len(keys), 500):
                conn.delete(*keys[start:start + 500])
            for pattern in patterns:
                keys = list(conn.scan_iter(match=pattern, count=500))
                if keys:
                    conn.delete(*keys)
        finally:
            conn.close()


def find_redis(db: int = BENCH_REDIS_DB) -> RedisTarget:
    """BENCH_REDIS_URL (the benchmarks' own), else REDIS_URL, else the private test Redis
    on 127.0.0.1:56380 (started when absent), database `db`."""
    bench_url = os.environ.get("BENCH_REDIS_URL")
    app_url = os.environ.get("REDIS_URL")
    if bench_url:
        target = RedisTarget(bench_url, flushable=True)
    elif app_url:
        target = RedisTarget(app_url, flushable=False)
    else:
        from habitbot.sandbox.services import RedisServer, ServiceError

        try:
            RedisServer("test", BENCH_REDIS_PORT, persistent=False).start()
        except ServiceError as exc:
            raise BenchError(str(exc)) from exc
        target = RedisTarget(f"redis://127.0.0.1:{BENCH_REDIS_PORT}/{db}", flushable=True)
    conn = target.connect()
    try:
        conn.ping()
    except Exception as exc:
        raise BenchError(f"Redis at {target.url} does not answer: {exc}") from exc
    finally:
        conn.close()
    return target


# tests/conftest.py: a test session claims a block of three databases base..base+2 on the
# private test Redis with this key in database 0, so that sessions never flush each other's.
TEST_REDIS_BLOCKS = tuple(range(1, 62, 3))
TEST_REDIS_CLAIM = "habitbot-tests:claim:{base}"
_CLAIM_URL = f"redis://127.0.0.1:{BENCH_REDIS_PORT}/0"
_RELEASE_CLAIM = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _claim_test_block(db: int, wait: float, ttl: int) -> tuple[str | None, str | None]:
    """On the private test Redis, take the test sessions' claim of the block holding `db`
    (waiting up to `wait` seconds for a test session to give it back)."""
    base = next((b for b in TEST_REDIS_BLOCKS if b <= db <= b + 2), None)
    if base is None:
        return None, None
    from habitbot.redis_client import make_redis

    key = TEST_REDIS_CLAIM.format(base=base)
    token = f"bench-{os.getpid()}"
    conn = make_redis(_CLAIM_URL)
    try:
        deadline = time.monotonic() + wait
        while not conn.set(key, token, nx=True, ex=ttl):
            if time.monotonic() > deadline:
                raise BenchError(f"Redis databases {base}..{base + 2} of the test Redis are "
                                 "claimed by a test session; run the benchmark after it")
            time.sleep(1.0)
    finally:
        conn.close()
    return key, token


def own_redis(db: int, wait: float = 60.0, ttl: float = 1800.0) -> RedisTarget:
    """Database `db` of BENCH_REDIS_URL's server, else of the private test Redis on
    127.0.0.1:56380 (started when absent), where the test sessions' block holding `db` is
    claimed as they claim it, for at most `ttl` seconds (call `release()` at the end).
    REDIS_URL is never used: the caller flushes the whole database."""
    bench_url = os.environ.get("BENCH_REDIS_URL")
    claim: tuple[str | None, str | None] = (None, None)
    if bench_url:
        base = bench_url.split("?", 1)[0]
        scheme, sep, rest = base.partition("://")
        host = rest.split("/", 1)[0]
        url = f"{scheme}{sep}{host}/{db}"
    else:
        from habitbot.sandbox.services import RedisServer, ServiceError

        try:
            RedisServer("test", BENCH_REDIS_PORT, persistent=False).start()
        except ServiceError as exc:
            raise BenchError(str(exc)) from exc
        url = f"redis://127.0.0.1:{BENCH_REDIS_PORT}/{db}"
        claim = _claim_test_block(db, wait, int(ttl))
    target = RedisTarget(url, flushable=True, claim_key=claim[0], claim_token=claim[1])
    conn = target.connect()
    try:
        conn.ping()
    except Exception as exc:
        target.release()
        raise BenchError(f"Redis at {url} does not answer: {exc}") from exc
    finally:
        conn.close()
    return target


# ---------------------------------------------------------------- PostgreSQL

@dataclass
class BenchDatabase:
    """A throwaway database on the private test cluster (127.0.0.1:55432, started when
    absent), migrated to head by the deploy gate. A leftover of an interrupted run under the
    same name is dropped first."""

    name: str
    migrate: bool = True
    url: str = ""
    _admin_url: str = field(default="", repr=False)

    def create(self) -> BenchDatabase:
        from habitbot.db import make_engine
        from habitbot.sandbox.services import PostgresCluster, ServiceError
        from habitbot.services.schema import GateError, run_deploy_gate

        cluster = PostgresCluster("test", BENCH_PG_PORT)
        try:
            cluster.start()
        except ServiceError as exc:
            raise BenchError(str(exc)) from exc
        self._admin_url = cluster.admin_url
        self.url = cluster.url(self.name)
        self.drop()
        cluster.create_database(self.name)
        if self.migrate:
            engine = make_engine(self.url, "cli")
            try:
                run_deploy_gate(engine)
            except GateError as exc:
                raise BenchError(f"deploy gate on {self.name}: {exc}") from exc
            finally:
                engine.dispose()
        return self

    def drop(self) -> None:
        import psycopg2

        if not self._admin_url:
            return
        conn = psycopg2.connect(self._admin_url, connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            conn.close()


def run_sql(engine: Any, statements: Sequence[str], params: dict[str, Any] | None = None,
            autocommit: bool = False) -> list[Any]:
    """Run driver-level SQL (pyformat parameters) in one transaction, or each statement on
    its own with `autocommit` (VACUUM); returns the rows of the last statement, if any.
    The pooled connection goes back with its isolation level restored."""
    options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    rows: list[Any] = []
    with engine.connect().execution_options(**options) as conn:
        for sql in statements:
            result = conn.exec_driver_sql(sql, params or {}) if params else \
                conn.exec_driver_sql(sql)
            rows = result.all() if result.returns_rows else []
        if not autocommit:
            conn.commit()
    return rows


# ---------------------------------------------------------------- interruption

class Interrupted(Exception):
    """Ctrl-C, SIGTERM or the overall timeout (SIGALRM) ended the run."""


class HardStop:
    """SIGINT, SIGTERM and SIGALRM (after `seconds`) raise `Interrupted` once in the main
    thread; `shield()` ignores further ones so the cleanup runs to its end."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._stopping = False

    def _raise(self, signum: int, frame: Any) -> None:
        if self._stopping:
            return
        self._stopping = True
        raise Interrupted(signal.Signals(signum).name)

    def arm(self) -> HardStop:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            signal.signal(sig, self._raise)
        signal.alarm(max(1, int(self.seconds)))
        return self

    def shield(self) -> None:
        self._stopping = True
        signal.alarm(0)

    @staticmethod
    def exit_code(exc: Interrupted) -> int:
        return 124 if str(exc) == "SIGALRM" else 130


# ---------------------------------------------------------------- where the time goes

# Statement kinds of the reminder services, by the first matching fragment of the SQL text.
SQL_KINDS = (
    ("claim select", "FOR UPDATE OF habit_schedules SKIP LOCKED"),
    ("reap select", "FOR UPDATE OF reminder_deliveries SKIP LOCKED"),
    ("rest lookup", "FROM rest_periods"),
    ("check-in lookup", "FROM habit_checkins"),
    ("insert delivery", "INSERT INTO reminder_deliveries"),
    ("advance schedule", "UPDATE habit_schedules"),
    ("update delivery", "UPDATE reminder_deliveries"),
)


def sql_kind(statement: str) -> str:
    for kind, fragment in SQL_KINDS:
        if fragment in statement:
            return kind
    return "other"


@dataclass
class SqlClock:
    """Seconds and calls per statement kind of one engine (before/after_cursor_execute);
    keeps the first claim statement with its parameters for EXPLAIN."""

    seconds: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    claim_sql: tuple[str, Any] | None = None

    def attach(self, engine: Any) -> None:
        from sqlalchemy import event

        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        elapsed = time.perf_counter() - conn.info["bench_started"].pop()
        kind = sql_kind(statement)
        self.seconds[kind] += elapsed
        # executemany (an ORM bulk UPDATE by primary key) runs once per parameter set
        self.calls[kind] += len(parameters) if executemany else 1
        if kind == "claim select" and self.claim_sql is None:
            self.claim_sql = (statement, parameters)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int, children: bool | None = True) -> float:
    """CPU seconds of a live process; with `children`, also of the children it has waited
    for (an RQ worker's finished work horses, the postmaster's ended backends); with
    `children=None`, of those children only."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    if children is None:
        return (cutime + cstime) / _CLOCK_TICKS
    return (utime + stime + (cutime + cstime if children else 0)) / _CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    """Live children of `pid`, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot, all cores."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values) - idle) / _CLOCK_TICKS, sum(values) / _CLOCK_TICKS


@dataclass
class CpuMeter:
    """CPU seconds used between `start()` and `stop()` by the machine and by named process
    groups: {name: function returning [(pid, children), …]} (`children` as in
    `process_cpu`), called at both ends: a process that ended in between is then counted in
    its parent's children time."""

    groups: dict[str, Callable[[], list[tuple[int, bool | None]]]]
    _start: dict[str, float] = field(default_factory=dict)
    _machine: tuple[float, float] = (0.0, 0.0)
    _wall: float = 0.0
    result: dict[str, float] = field(default_factory=dict)

    def _read(self) -> dict[str, float]:
        return {name: sum(process_cpu(pid, kids) for pid, kids in members())
                for name, members in self.groups.items()}

    def start(self) -> CpuMeter:
        self._start = self._read()
        self._machine = machine_cpu()
        self._wall = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        end = self._read()
        busy, total = machine_cpu()
        self.result = {name: end[name] - self._start[name] for name in self.groups}
        self.result["machine busy"] = busy - self._machine[0]
        self.result["machine total"] = total - self._machine[1]
        self.result["wall"] = time.monotonic() - self._wall
        return self.result
