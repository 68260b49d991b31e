"""`make run`: the whole stack in the foreground.

With nothing configured it is a sandbox: a private PostgreSQL and Redis under `var/`, the
Telegram Bot API emulator, then the deploy gate, then supervisord with the four programs.
`DATABASE_URL`, `REDIS_URL` and `BOT_TOKEN` each switch the matching piece to the real
service. Ctrl-C (or TERM) stops everything it started and leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from habitbot.sandbox.services import (
    ROOT,
    PostgresCluster,
    RedisServer,
    ServiceError,
    port_open,
    wait_port,
)

SANDBOX_TOKEN = "123456:SANDBOX-TOKEN"
PG_PORT = int(os.environ.get("SANDBOX_PG_PORT", "54329"))
REDIS_PORT = int(os.environ.get("SANDBOX_REDIS_PORT", "56379"))
TELEGRAM_PORT = int(os.environ.get("SANDBOX_TELEGRAM_PORT", "8081"))
VENV_BIN = Path(sys.executable).parent


def say(message: str) -> None:
    print(f"[habitbot] {message}", flush=True)


class Stack:
    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.cluster: PostgresCluster | None = None
        self.redis: RedisServer | None = None
        self.children: list[subprocess.Popen] = []
        self.supervisord: subprocess.Popen | None = None

    def start_services(self) -> None:
        log_dir = Path(self.env.get("LOG_DIR") or ROOT / "var" / "log").resolve()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.env["LOG_DIR"] = str(log_dir)
        if not self.env.get("DATABASE_URL"):
            self.cluster = PostgresCluster("sandbox", PG_PORT)
            self.cluster.start()
            self.cluster.create_database("habitbot")
            self.env["DATABASE_URL"] = self.cluster.url("habitbot")
            say(f"PostgreSQL (sandbox) on 127.0.0.1:{PG_PORT}, data in {self.cluster.data}")
        if not self.env.get("REDIS_URL"):
            self.redis = RedisServer("sandbox", REDIS_PORT, persistent=True)
            self.redis.start()
            self.env["REDIS_URL"] = self.redis.url
            say(f"Redis (sandbox) on 127.0.0.1:{REDIS_PORT}")
        if not self.env.get("BOT_TOKEN"):
            self.start_emulator()

    def start_emulator(self) -> None:
        if port_open(TELEGRAM_PORT):
            raise ServiceError(f"port {TELEGRAM_PORT} is taken: set SANDBOX_TELEGRAM_PORT")
        log = open(Path(self.env["LOG_DIR"]) / "telegram-emulator.log", "ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "habitbot.sandbox.telegram_emulator", "--host", "127.0.0.1",
             "--port", str(TELEGRAM_PORT), "--token", SANDBOX_TOKEN],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        log.close()
        self.children.append(process)
        wait_port(TELEGRAM_PORT, 15, "Telegram emulator")
        self.env["BOT_TOKEN"] = SANDBOX_TOKEN
        self.env["TELEGRAM_API_URL"] = f"http://127.0.0.1:{TELEGRAM_PORT}"
        say(f"Telegram Bot API emulator on http://127.0.0.1:{TELEGRAM_PORT}")

    def deploy_gate(self) -> None:
        result = subprocess.run([str(VENV_BIN / "habitbot"), "deploy-gate"], env=self.env)
        if result.returncode != 0:
            raise ServiceError("deploy gate failed (see above); not starting the programs")

    def run_supervisord(self) -> int:
        (ROOT / "var").mkdir(exist_ok=True)
        self.supervisord = subprocess.Popen(
            [str(VENV_BIN / "supervisord"), "-n", "-c", str(ROOT / "supervisord.conf")],
            env=self.env, start_new_session=True)
        port = self.env.get("PORT", "8080")
        say("supervisord started: bot, web, worker-0, worker-1, scheduler")
        say(f"health:    curl -s http://127.0.0.1:{port}/health")
        say(f"status:    {VENV_BIN / 'supervisorctl'} -c {ROOT / 'supervisord.conf'} status")
        if "TELEGRAM_API_URL" in self.env and self.env["BOT_TOKEN"] == SANDBOX_TOKEN:
            say(f"chat:      open http://127.0.0.1:{TELEGRAM_PORT}/ to talk to the bot")
        say(f"logs:      {self.env['LOG_DIR']}")
        say("Ctrl-C stops everything.")
        return self.supervisord.wait()

    def stop(self) -> None:
        if self.supervisord is not None and self.supervisord.poll() is None:
            say("stopping programs (workers finish the job in hand)…")
            self.supervisord.send_signal(signal.SIGTERM)
            try:
                self.supervisord.wait(timeout=400)
            except subprocess.TimeoutExpired:
                os.killpg(self.supervisord.pid, signal.SIGKILL)
        for child in self.children:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        if self.redis is not None:
            self.redis.stop()
        if self.cluster is not None:
            self.cluster.stop()
        say("stopped.")


def main() -> int:
    stack = Stack()

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Explicit for both: a shell that starts us in the background ignores SIGINT otherwise.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    try:
        stack.start_services()
        stack.deploy_gate()
        code = stack.run_supervisord()
    except KeyboardInterrupt:
        pass
    except ServiceError as exc:
        say(f"FAIL: {exc}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
