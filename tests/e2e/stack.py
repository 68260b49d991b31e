"""Run the real supervisord program group against test services (used by end-to-end tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import requests

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
