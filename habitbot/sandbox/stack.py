"""`make run`: the whole stack in the foreground.

With nothing configured it is a sandbox: a private PostgreSQL and Redis under `var/`, the
Telegram Bot API emulator, the YooKassa and Crypto Pay emulators (whose pay pages complete a
payment and fire the webhook at this stack), then the deploy gate, then supervisord with the
four programs. `DATABASE_URL`, `REDIS_URL`, `BOT_TOKEN`, `YOOKASSA_SHOP_ID` and
`CRYPTOBOT_TOKEN` each switch the matching piece to the real service. Ctrl-C (or TERM) stops
everything it started and leaves no process behind.
"""

from __future__ import annotations

import os
import secrets
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
YOOKASSA_PORT = int(os.environ.get("SANDBOX_YOOKASSA_PORT", "8082"))
CRYPTOPAY_PORT = int(os.environ.get("SANDBOX_CRYPTOPAY_PORT", "8083"))
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
        self.generated_admin_token: str | None = None

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
        if not self.env.get("YOOKASSA_SHOP_ID"):
            self.start_yookassa()
        if not self.env.get("CRYPTOBOT_TOKEN"):
            self.start_cryptopay()
        if not self.env.get("ADMIN_TOKEN"):
            # A fresh strong token each run (a weak one would stop the web program).
            self.env["ADMIN_TOKEN"] = self.generated_admin_token = secrets.token_urlsafe(32)

    def _spawn(self, module: str, port: int, port_var: str, name: str,
               *args: str) -> None:
        if port_open(port):
            raise ServiceError(f"port {port} is taken: set {port_var}")
        log = open(Path(self.env["LOG_DIR"]) / f"{module.rsplit('.', 1)[-1]}.log", "ab")
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        log.close()
        self.children.append(process)
        wait_port(port, 15, name)

    def _webhook(self, provider: str) -> str:
        return f"http://127.0.0.1:{self.env.get('PORT', '8080')}/webhooks/{provider}"

    def start_emulator(self) -> None:
        self._spawn("habitbot.sandbox.telegram_emulator", TELEGRAM_PORT,
                    "SANDBOX_TELEGRAM_PORT", "Telegram emulator", "--token", SANDBOX_TOKEN)
        self.env["BOT_TOKEN"] = SANDBOX_TOKEN
        self.env["TELEGRAM_API_URL"] = f"http://127.0.0.1:{TELEGRAM_PORT}"
        say(f"Telegram Bot API emulator on http://127.0.0.1:{TELEGRAM_PORT}")

    def start_yookassa(self) -> None:
        from habitbot.sandbox.yookassa_emulator import DEFAULT_SECRET_KEY, DEFAULT_SHOP_ID

        self._spawn("habitbot.sandbox.yookassa_emulator", YOOKASSA_PORT,
                    "SANDBOX_YOOKASSA_PORT", "YooKassa emulator",
                    "--webhook-url", self._webhook("yookassa"))
        self.env.update({"YOOKASSA_SHOP_ID": DEFAULT_SHOP_ID,
                         "YOOKASSA_SECRET_KEY": DEFAULT_SECRET_KEY,
                         "YOOKASSA_API_URL": f"http://127.0.0.1:{YOOKASSA_PORT}/v3",
                         # its notifications come from this host, not YooKassa's networks
                         "YOOKASSA_TRUSTED_IPS": "127.0.0.1/32"})
        say(f"YooKassa emulator on http://127.0.0.1:{YOOKASSA_PORT} (pay pages: /pay/<id>)")

    def start_cryptopay(self) -> None:
        from habitbot.sandbox.cryptopay_emulator import DEFAULT_TOKEN

        self._spawn("habitbot.sandbox.cryptopay_emulator", CRYPTOPAY_PORT,
                    "SANDBOX_CRYPTOPAY_PORT", "Crypto Pay emulator",
                    "--token", DEFAULT_TOKEN, "--webhook-url", self._webhook("cryptobot"))
        self.env.update({"CRYPTOBOT_TOKEN": DEFAULT_TOKEN,
                         "CRYPTOBOT_API_URL": f"http://127.0.0.1:{CRYPTOPAY_PORT}/api"})
        say(f"Crypto Pay emulator on http://127.0.0.1:{CRYPTOPAY_PORT} (pay pages: /pay/<hash>)")

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
        if self.generated_admin_token is not None:  # never echo an operator's own token
            say(f"admin:     http://127.0.0.1:{port}/admin (token for this run: "
                f"{self.generated_admin_token})")
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
