"""Shared helpers of the benchmarks under bench/; running this file does nothing.

- `figure()` prints one result as a JSON line: {"bench", "value", "unit", "target", "ok"}.
- `meets()` checks a value against a target written as "<op> <number>" (">= 0.97").
- `percentile()` with linear interpolation between the closest ranks.
- `Emulator` runs the Telegram emulator as a separate process on a free port.
- `find_redis()` picks the Redis a benchmark may use and clean.
- `stop_process()` ends a child process: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCH_REDIS_PORT = 56380
BENCH_REDIS_DB = 4


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
