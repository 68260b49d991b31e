"""Private PostgreSQL and Redis for the sandbox (`make run`) and the test suite (`make test`).

Data lives under `var/` (or, when an unprivileged user cannot reach the checkout, under
/var/tmp); ports default to ones that do not collide with system services. `initdb` and the
server refuse to run as root, so as root the cluster runs as the system user `habitbot`,
created on first use.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_USER = "habitbot"


class ServiceError(Exception):
    pass


def _pg_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(p.split("/")[4]), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ServiceError("PostgreSQL server binaries not found: run `make install` "
                       "(apt-get install postgresql)")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not start listening on port {port} in {timeout:.0f}s")
        time.sleep(0.1)


def _ensure_service_user() -> pwd.struct_passwd | None:
    """As root, the unprivileged account PostgreSQL runs as; otherwise None (run as self)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        SERVICE_USER], check=True)
        return pwd.getpwnam(SERVICE_USER)


def _reachable_by(user: pwd.struct_passwd | None, path: Path) -> bool:
    if user is None:
        return True
    result = subprocess.run(["runuser", "-u", user.pw_name, "--", "test", "-w", str(path)],
                            capture_output=True)
    return result.returncode == 0


def _as_user(user: pwd.struct_passwd | None, argv: list[str]) -> list[str]:
    return argv if user is None else ["runuser", "-u", user.pw_name, "--", *argv]


@dataclass
class PostgresCluster:
    name: str = "sandbox"
    port: int = 54329

    def __post_init__(self) -> None:
        self.user = _ensure_service_user()
        base = ROOT / "var" / self.name
        base.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            os.chown(base, self.user.pw_uid, self.user.pw_gid)
        if not _reachable_by(self.user, base):
            digest = hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]
            base = Path("/var/tmp") / f"habitbot-{digest}" / self.name
            base.mkdir(parents=True, exist_ok=True)
            os.chmod(base.parent, 0o755)
            if self.user is not None:
                os.chown(base, self.user.pw_uid, self.user.pw_gid)
        self.base = base
        self.data = base / "pgdata"
        self.sockets = base / "run"
        self.log = base / "postgres.log"
        self.bindir = _pg_bindir()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(_as_user(self.user, argv), capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(f"{Path(argv[0]).name} failed: "
                               f"{(result.stderr or result.stdout).strip()[-800:]}")

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                       "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"])
        self.sockets.mkdir(exist_ok=True)
        if self.user is not None:
            os.chown(self.sockets, self.user.pw_uid, self.user.pw_gid)
        if port_open(self.port):
            return
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=200 -c fsync=off -c synchronous_commit=off")
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                   "-o", options, "-w", "-t", "60", "start"])
        wait_port(self.port, 30, "PostgreSQL")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(_as_user(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.data),
                                                "-m", "fast", "-w", "stop"]),
                           capture_output=True)

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.admin_url, connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


@dataclass
class RedisServer:
    name: str = "sandbox"
    port: int = 56379
    persistent: bool = True

    def __post_init__(self) -> None:
        self.dir = ROOT / "var" / self.name / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server not found: run `make install` "
                               "(apt-get install redis-server)")
        if port_open(self.port):
            return
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--logfile", str(self.dir / "redis.log"), "--daemonize", "yes",
                "--pidfile", str(self.dir / "redis.pid"), "--save", "",
                "--appendonly", "yes" if self.persistent else "no",
                # Test sessions each claim a block of three databases (tests/conftest.py).
                "--databases", "64"]
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(f"redis-server failed: {result.stderr.strip()[-400:]}")
        wait_port(self.port, 15, "Redis")

    def stop(self) -> None:
        if port_open(self.port):
            subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
                           capture_output=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m habitbot.sandbox.services start|stop NAME PG_PORT REDIS_PORT`: print URLs."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 4 or args[0] not in ("start", "stop"):
        print("usage: python -m habitbot.sandbox.services start|stop NAME PG_PORT REDIS_PORT",
              file=sys.stderr)
        return 2
    action, name, pg_port, redis_port = args
    cluster = PostgresCluster(name, int(pg_port))
    redis_server = RedisServer(name, int(redis_port), persistent=False)
    try:
        if action == "start":
            cluster.start()
            redis_server.start()
            print(f"TEST_PG_ADMIN_URL={cluster.admin_url}")
            print(f"TEST_REDIS_URL={redis_server.url}")
        else:
            redis_server.stop()
            cluster.stop()
    except ServiceError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
