"""Run the real supervisord program group against test services (used by end-to-end tests),
and the processes and private servers those tests take down on purpose."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from habitbot.sandbox.services import PostgresCluster, RedisServer
from tests.support import polling

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    """Poll gently: several checks here start a supervisorctl process each."""
    return polling.wait_until(predicate, timeout, what, interval=0.25)


PROGRAMS = frozenset({"habitbot:bot", "habitbot:web", "habitbot:worker-0", "habitbot:worker-1",
                      "habitbot:scheduler"})


def children(pid: int) -> list[int]:
    """The direct child processes of `pid` (an RQ worker's work horse, for instance)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        # "pid (command) state ppid ...": the command may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@contextmanager
def private_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of its own, for a test that stops and starts it: the shared test
    cluster serves every other test meanwhile."""
    cluster = PostgresCluster(f"e2e-pg-{uuid.uuid4().hex[:8]}", free_port())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base, ignore_errors=True)


@contextmanager
def private_redis() -> Iterator[RedisServer]:
    """A Redis server of its own (no persistence: a restart comes back empty)."""
    server = RedisServer(f"e2e-redis-{uuid.uuid4().hex[:8]}", free_port(), persistent=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir.parent, ignore_errors=True)


class Stack:
    """supervisord with the repository's program definitions; only the socket, pid file and
    log directory move to a private folder so that a running sandbox is not disturbed."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.workdir = workdir
        self.port = free_port()
        self.env = {**os.environ, **env, "PORT": str(self.port),
                    "LOG_DIR": str(workdir / "log")}
        (workdir / "log").mkdir(parents=True, exist_ok=True)
        conf = (ROOT / "supervisord.conf").read_text()
        conf = conf.replace("%(here)s/var/supervisor.sock", str(workdir / "supervisor.sock"))
        conf = conf.replace("%(here)s/var/supervisord.pid", str(workdir / "supervisord.pid"))
        conf = conf.replace("%(here)s", str(ROOT))
        self.conf = workdir / "supervisord.conf"
        self.conf.write_text(conf)
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Stack:
        self.process = subprocess.Popen([str(BIN / "supervisord"), "-n", "-c", str(self.conf)],
                                        env=self.env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        return self

    def ctl(self, *args: str) -> str:
        result = subprocess.run([str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
                                env=self.env, capture_output=True, text=True, timeout=400)
        return result.stdout

    def statuses(self) -> dict[str, str]:
        out = {}
        for line in self.ctl("status").splitlines():
            parts = line.split()
            if len(parts) >= 2:
                out[parts[0]] = parts[1]
        return out

    def pids(self) -> dict[str, str]:
        return {line.split()[0]: line.split()[3].rstrip(",")
                for line in self.ctl("status").splitlines() if "RUNNING" in line}

    def all_running(self) -> bool:
        statuses = self.statuses()
        return set(statuses) == PROGRAMS and set(statuses.values()) == {"RUNNING"}

    def wait_ready(self, timeout: float = 90, scheduler_starts: int = 1) -> None:
        """Every program RUNNING, the periodic jobs registered (by the `scheduler_starts`-th
        scheduler of this stack) and the workers beating."""
        wait_until(self.all_running, timeout, "all programs RUNNING")
        wait_until(lambda: self.log("scheduler").count("Scheduler started") >= scheduler_starts,
                   timeout, "the scheduler registered its jobs")
        wait_until(lambda: self.health()[1].get("checks", {}).get("workers", {})
                   .get("alive", 0) >= 2, timeout, "two workers alive")

    def health(self) -> tuple[int, dict]:
        try:
            response = requests.get(self.base_url + "/health", timeout=5)
        except requests.RequestException:
            return 0, {}
        return response.status_code, response.json()

    def habitbot(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "habitbot"), *args], env=self.env, capture_output=True,
                              text=True, timeout=120)

    def log(self, name: str) -> str:
        path = self.workdir / "log" / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
