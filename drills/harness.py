"""The laboratory a drill runs in, and the stack it breaks.

`Lab` holds what outlives one drill: a private PostgreSQL cluster and a private Redis server
(started once per run; a drill may stop or freeze them, and puts them back). `Lab.stack()`
gives a drill a fresh world: its own database migrated by `habitbot deploy-gate` (as the
systemd unit does before supervisord starts), an empty Redis, new Telegram, YooKassa and Crypto
Pay emulators, and the real supervisord program group (tests/e2e/stack.py) pointed at them.

`DrillStack.sh()` runs a command line exactly as the runbook prints it, in a shell whose
working directory holds this stack's `supervisord.conf`, with the programs' environment and
`.venv/bin` on PATH; only the runbook's web address (127.0.0.1:8080) is rewritten to the
stack's port. Each command and its output go to `commands.log` next to the stack's logs. The
commands a drill runs this way are the ones the runbook documents (the meta test checks that
each appears in the drill's runbook section); what reproduces an incident goes around it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import redis
from sqlalchemy import Engine, text

from habitbot.db import make_engine
from habitbot.sandbox.cryptopay_emulator import CryptoPayEmulator
from habitbot.sandbox.emulator_client import EmulatorClient
from habitbot.sandbox.payments_client import CryptoPayControl, YooKassaControl
from habitbot.sandbox.services import PostgresCluster, RedisServer
from habitbot.sandbox.telegram_emulator import TelegramEmulator
from habitbot.sandbox.yookassa_emulator import YooKassaEmulator
from tests.e2e.stack import Stack, private_postgres, private_redis, wait_until

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TOKEN = "123456:DRILL-TOKEN-0123456789abcdefghijklmnopqrstuv"
ALERT_CHAT = 900001
RUNBOOK_WEB = "127.0.0.1:8080"  # how the runbook writes the web address
SHOP_ID = "100500"
YOOKASSA_SECRET = "test_DRILL-secret-key"
CRYPTO_TOKEN = "34567:AAdrillCryptoPayToken"
# YooKassa retries a refused notification for a day; the emulator compresses that.
WEBHOOK_RETRIES = (0.5, 1.0, 2.0)


class DrillStack(Stack):
    """The supervisord program group of one drill, with the operator's tools around it."""

    def __init__(self, workdir: Path, env: dict[str, str], lab: Lab):
        super().__init__(workdir, env)
        self.lab = lab
        self.commands: list[str] = []

    # -- the operator's shell ------------------------------------------------------------------
    def sh(self, command: str, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run a runbook command line as written (see the module docstring)."""
        self.commands.append(command)
        env = {**self.env, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        line = command.replace(RUNBOOK_WEB, f"127.0.0.1:{self.port}")
        result = subprocess.run(["bash", "-c", line], cwd=self.workdir, env=env,
                                capture_output=True, text=True, timeout=timeout)
        with (self.workdir / "commands.log").open("a") as transcript:
            transcript.write(f"$ {command}\n{result.stdout}{result.stderr}"
                             f"[exit {result.returncode}]\n\n")
        return result

    def sh_ok(self, command: str, timeout: float = 180) -> str:
        """`sh()` that must exit 0; returns stdout."""
        result = self.sh(command, timeout)
        if result.returncode != 0:
            raise AssertionError(f"`{command}` exited {result.returncode}: "
                                 f"{(result.stderr or result.stdout).strip()[-400:]}")
        return result.stdout

    def systemctl_restart(self, **changes: str | None) -> None:
        """`systemctl restart habitbot` after editing /etc/habitbot/habitbot.env: supervisord
        and every program start again with the new environment (None removes a variable)."""
        self.commands.append("systemctl restart habitbot")
        self.stop()
        for name, value in changes.items():
            if value is None:
                self.env.pop(name, None)
            else:
                self.env[name] = value
        self.sh_ok("habitbot deploy-gate")  # ExecStartPre of the unit
        self.commands.pop()
        starts = self.log("scheduler").count("Scheduler started") + 1
        self.start()
        self.wait_ready(scheduler_starts=starts)

    # -- what the operator looks at --------------------------------------------------------------
    def log_records(self, program: str) -> list[dict[str, Any]]:
        """The JSON lines of a program's log (other lines, e.g. tracebacks, are skipped)."""
        records = []
        for line in self.log(program).splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records

    def logged(self, program: str, phrase: str) -> list[dict[str, Any]]:
        """Log records of `program` whose "msg" contains `phrase`."""
        return [r for r in self.log_records(program) if phrase in str(r.get("msg", ""))]

    def alerts(self, phrase: str = "") -> list[str]:
        """Alert texts that reached the ALERT_CHAT_ID chat."""
        return [m.get("text") or "" for m in self.lab.tg.messages(ALERT_CHAT, sender="bot")
                if phrase in (m.get("text") or "")]

    def alert_rows(self, phrase: str = "") -> list[Any]:
        """`admin_alerts` rows whose "[SEVERITY] component: message" contains `phrase`."""
        rows = self.query("SELECT severity, component, message, status FROM admin_alerts "
                          "ORDER BY id")
        return [r for r in rows if phrase in f"[{r.severity}] {r.component}: {r.message}"]

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def execute(self, sql: str, **params: Any) -> None:
        """A change made by hand (committed)."""
        with self.engine.begin() as conn:
            conn.execute(text(sql), params)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    @property
    def engine(self) -> Engine:
        if getattr(self, "_engine", None) is None:
            self._engine = make_engine(self.env["DATABASE_URL"], "cli")
        return self._engine

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.env["REDIS_URL"])

    def wait_health(self, predicate: Any, timeout: float, what: str) -> tuple[int, dict]:
        return wait_until(lambda: (lambda r: r if predicate(*r) else None)(self.health()),
                          timeout, what)

    def close(self) -> None:
        self.stop()
        if getattr(self, "_engine", None) is not None:
            self._engine.dispose()


class Lab:
    """Services shared by the drills of one run; see the module docstring."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self._exit = ExitStack()
        self.pg: PostgresCluster
        self.redis_server: RedisServer
        self.telegram: TelegramEmulator
        self.tg: EmulatorClient
        self.kassa: YooKassaEmulator
        self.kassa_ctl: YooKassaControl
        self.cryptopay: CryptoPayEmulator
        self.crypto_ctl: CryptoPayControl

    def __enter__(self) -> Lab:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pg = self._exit.enter_context(private_postgres())
        self.redis_server = self._exit.enter_context(private_redis())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._exit.close()

    # -- the outside world of one drill ------------------------------------------------------------
    def _emulators(self, scope: ExitStack, telegram_rate: tuple[float, float, float]) -> None:
        global_rate, chat_rate, chat_burst = telegram_rate
        self.telegram = TelegramEmulator(tokens=(TOKEN,), global_rate=global_rate,
                                         chat_rate=chat_rate, chat_burst=chat_burst).start()
        scope.callback(self.telegram.stop)
        self.tg = EmulatorClient(self.telegram.url)
        scope.callback(self.tg.close)
        self.kassa = YooKassaEmulator(shop_id=SHOP_ID, secret_key=YOOKASSA_SECRET,
                                      retry_delays=WEBHOOK_RETRIES).start()
        scope.callback(self.kassa.stop)
        self.kassa_ctl = YooKassaControl(self.kassa.url)
        scope.callback(self.kassa_ctl.close)
        self.cryptopay = CryptoPayEmulator(tokens=(CRYPTO_TOKEN,),
                                           retry_delays=WEBHOOK_RETRIES).start()
        scope.callback(self.cryptopay.stop)
        self.crypto_ctl = CryptoPayControl(self.cryptopay.url)
        scope.callback(self.crypto_ctl.close)

    def _database(self, name: str) -> str:
        self.pg.start()  # a drill that stopped it and failed may have left it down
        conn = psycopg2.connect(self.pg.admin_url, connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.pg.url(name)

    def env(self, database_url: str) -> dict[str, str]:
        """The production environment of the programs, pointed at this lab."""
        return {
            "BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": self.telegram.url,
            "DATABASE_URL": database_url,
            "REDIS_URL": self.redis_server.url,
            "ALERT_CHAT_ID": str(ALERT_CHAT),
            "YOOKASSA_SHOP_ID": SHOP_ID,
            "YOOKASSA_SECRET_KEY": YOOKASSA_SECRET,
            "YOOKASSA_API_URL": self.kassa.api_url,
            "YOOKASSA_TRUSTED_IPS": "127.0.0.1/32",
            "CRYPTOBOT_TOKEN": CRYPTO_TOKEN,
            "CRYPTOBOT_API_URL": self.cryptopay.api_url,
        }

    @contextmanager
    def stack(self, name: str, telegram_rate: tuple[float, float, float] = (30, 1, 3),
              **env: str | None) -> Iterator[DrillStack]:
        """A fresh stack for drill `name`, ready (every program RUNNING, jobs registered, two
        workers beating); `env` adds or (None) removes variables."""
        with ExitStack() as scope:
            self._emulators(scope, telegram_rate)
            database_url = self._database("drill_" + name.replace(".", "_"))
            conn = redis.Redis.from_url(self.redis_server.url)
            conn.flushall()
            conn.close()
            values = self.env(database_url)
            for key, value in env.items():
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value
            workdir = self.workdir / name  # the last run's logs of this drill stay there
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
            stack = DrillStack(workdir, {k: v for k, v in values.items() if v is not None}, self)
            for absent in [k for k, v in env.items() if v is None]:
                stack.env.pop(absent, None)  # not inherited from the caller's environment
            scope.callback(stack.close)
            stack.sh_ok("habitbot deploy-gate")
            stack.commands.clear()
            self.kassa_ctl.set_webhook(f"{stack.base_url}/webhooks/yookassa")
            self.crypto_ctl.set_webhook(f"{stack.base_url}/webhooks/cryptobot")
            stack.start()
            stack.wait_ready()
            stack.wait_health(lambda code, body: body.get("status") == "ok", 90,
                              "/health ok (the bot polling)")
            yield stack
