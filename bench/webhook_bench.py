"""Webhook benchmark: verified YooKassa notifications per second under gunicorn, and 100
concurrent duplicates of one notification crediting exactly once.

Setup: a throwaway database on the private test cluster at head, a Redis database of the
benchmark's own, the YooKassa emulator in its own process (webhook delivery off: the benchmark
fires the notifications itself), and the `web` program as production runs it (gunicorn with
conf/gunicorn.conf.py and its worker and thread counts unless --web-workers / --web-threads
say otherwise, `webhooks.app:create_app()`). N users each get a pending top-up in our database
and a paid payment at the emulator whose metadata is what `start_payment` writes (our payment
id and idempotence key, the payer's Telegram id, the payment type). Then:

1. rate: the N `payment.succeeded` notifications are POSTed by `--clients` concurrent clients;
   each one is handled in full — source address check, re-read of the payment from the
   emulator's API, the exactly-once credit in PostgreSQL, the user's notice queued in Redis
   (no worker runs: the notices stay queued, as in a burst that outpaces the drain).
   webhooks/s = N ÷ wall time from the first request to the last answer.
2. duplicates: one more paid payment, and 100 copies of its notification released together
   from 100 threads: every answer must be 200 and exactly one credit written.

Figures (one JSON line each, after a table for people):
- webhooks.rate               verified notifications handled per second (target >= 200)
- webhooks.errors             answers other than 200 during the rate run (== 0)
- webhooks.credited_ratio     credits written ÷ N (== 1: every payment credited once)
- webhooks.duplicate_credits  credits from the 100 concurrent duplicates (== 1)

Targets that are missed print ok=false; the exit code is non-zero only when the benchmark
could not run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import runpy
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from common import (
    ROOT,
    BenchDatabase,
    BenchError,
    CpuMeter,
    HardStop,
    Interrupted,
    child_env,
    child_pids,
    figure,
    free_port,
    own_redis,
    run_sql,
    stop_process,
    table,
)

DB_NAME = "bench_webhooks"
REDIS_DB = 15  # the last block the test sessions take
SHOP_ID = "500105"
SECRET = "test_BENCH-secret"
TOKEN = "123456:BENCH-WEBHOOKS"
DUPLICATES = 100
CLEANUP_MARGIN = 20.0
AMOUNT_MINOR = 10000


@dataclass
class Stack:
    db: BenchDatabase
    redis: Any = None
    redis_url: str = ""
    kassa_port: int = 0
    web_port: int = 0
    gunicorn: tuple[int, int] = (0, 0)  # workers, threads
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)

    @property
    def kassa_url(self) -> str:
        return f"http://127.0.0.1:{self.kassa_port}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def spawn(self, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def tail(self, index: int, chars: int = 2000) -> str:
        log = self.logs[index]
        log.flush()
        log.seek(0)
        return str(log.read()[-chars:])

    def flush_redis(self) -> None:
        conn = self.redis.connect()
        try:
            conn.flushdb()
        finally:
            conn.close()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc, grace=10)
        for log in self.logs:
            log.close()
        if self.redis is not None:
            self.flush_redis()
            self.redis.release()


def _wait_for(url: str, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise BenchError(f"{what} did not answer within {timeout:.0f}s")


def start(stack: Stack, args: argparse.Namespace) -> None:
    stack.db.create()
    stack.redis = own_redis(REDIS_DB, ttl=args.timeout + 60)
    stack.redis_url = stack.redis.url
    stack.flush_redis()
    env = child_env()
    stack.kassa_port, stack.web_port = free_port(), free_port()
    kassa = stack.spawn([sys.executable, "-m", "habitbot.sandbox.yookassa_emulator",
                         "--port", str(stack.kassa_port), "--shop-id", SHOP_ID,
                         "--secret-key", SECRET, "--log-level", "WARNING"], env)
    _wait_for(f"{stack.kassa_url}/control/health", kassa, "the YooKassa emulator")
    web_env = {**env, "BOT_TOKEN": TOKEN, "DATABASE_URL": stack.db.url,
               "REDIS_URL": stack.redis_url, "TELEGRAM_API_URL": "http://127.0.0.1:9",
               "YOOKASSA_SHOP_ID": SHOP_ID, "YOOKASSA_SECRET_KEY": SECRET,
               "YOOKASSA_API_URL": f"{stack.kassa_url}/v3",
               "YOOKASSA_TRUSTED_IPS": "127.0.0.1/32", "PORT": str(stack.web_port),
               "LOG_DIR": tempfile.gettempdir()}
    for name, value in (("WEB_WORKERS", args.web_workers), ("WEB_THREADS", args.web_threads)):
        if value is None:
            web_env.pop(name, None)
        else:
            web_env[name] = str(value)
    stack.gunicorn = _gunicorn_settings(web_env)
    web = stack.spawn([os.path.join(os.path.dirname(sys.executable), "gunicorn"), "-c",
                       str(ROOT / "conf/gunicorn.conf.py"), "--access-logfile", "/dev/null",
                       "webhooks.app:create_app()"], web_env)
    _wait_for(f"{stack.web_url}/health", web, "gunicorn")


def _gunicorn_settings(env: dict[str, str]) -> tuple[int, int]:
    """(workers, threads) that conf/gunicorn.conf.py gives in the `web` environment."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        conf = runpy.run_path(str(ROOT / "conf/gunicorn.conf.py"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return int(conf["workers"]), int(conf["threads"])


def _payments(stack: Stack, count: int) -> list[tuple[int, str]]:
    """`count` users with a pending top-up here and a paid payment at the emulator, its
    metadata as `start_payment` writes it."""
    from habitbot.db import make_engine
    from habitbot.payments.origin import Origin

    engine = make_engine(stack.db.url, "cli")
    try:
        rows = run_sql(engine, [
            "INSERT INTO users (telegram_id, language) "
            f"SELECT 8000000 + g, 'en' FROM generate_series(1, {count}) g",
            "WITH made AS (INSERT INTO payments (user_id, provider, idempotence_key, "
            "payment_type, amount_minor, currency) SELECT id, 'yookassa', gen_random_uuid(), "
            f"'balance_topup', {AMOUNT_MINOR}, 'RUB' FROM users WHERE telegram_id > 8000000 "
            "RETURNING id, user_id, idempotence_key) "
            "SELECT made.id, made.idempotence_key, users.telegram_id FROM made "
            "JOIN users ON users.id = made.user_id ORDER BY made.id"])
    finally:
        engine.dispose()
    origins = [Origin(int(r[0]), uuid.UUID(str(r[1])), int(r[2]), "balance_topup")
               for r in rows]
    session = requests.Session()

    def create(origin: Origin) -> tuple[int, str]:
        body: dict[str, Any] = {
            "amount": {"value": f"{AMOUNT_MINOR / 100:.2f}", "currency": "RUB"},
            "capture": True, "metadata": origin.fields(),
            "confirmation": {"type": "redirect", "return_url": "https://t.me/bench"}}
        made = session.post(f"{stack.kassa_url}/v3/payments", json=body, timeout=10,
                            auth=(SHOP_ID, SECRET), headers={"Idempotence-Key": str(origin.key)})
        made.raise_for_status()
        provider_id = made.json()["id"]
        session.post(f"{stack.kassa_url}/control/payments/{provider_id}/pay", json={},
                     timeout=10).raise_for_status()
        assert origin.payment_id is not None
        return origin.payment_id, provider_id

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(create, origins))


def _notification(provider_id: str) -> bytes:
    return json.dumps({"type": "notification", "event": "payment.succeeded",
                       "object": {"id": provider_id, "status": "succeeded",
                                  "recipient": {"account_id": SHOP_ID}}}).encode()


def _credits(stack: Stack, payment_ids: list[int] | None = None) -> int:
    from habitbot.db import make_engine

    engine = make_engine(stack.db.url, "cli")
    where = f" AND payment_id IN ({','.join(map(str, payment_ids))})" if payment_ids else ""
    try:
        [[count]] = run_sql(engine, ["SELECT count(*) FROM balance_transactions "
                                     f"WHERE kind = 'topup'{where}"])
    finally:
        engine.dispose()
    return int(count)


class Poster:
    """Keep-alive POSTs with http.client: a lean client, so that the benchmark's own CPU
    takes as little as possible from the two cores the server needs."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes) -> int:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.conn.request("POST", path, body, {"Content-Type": "application/json"})
                response = self.conn.getresponse()
                response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    return 0
        return 0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _postmaster() -> int | None:
    """The private test cluster's postmaster (its backends' CPU is PostgreSQL's share)."""
    try:
        return int((ROOT / "var/test/pgdata/postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def rate_run(stack: Stack, payments: list[tuple[int, str]], clients: int) -> dict[str, Any]:
    local = threading.local()
    posters: list[Poster] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def fire(item: tuple[int, str]) -> None:
        poster = getattr(local, "poster", None)
        if poster is None:
            poster = local.poster = Poster(stack.web_port)
            with lock:
                posters.append(poster)
        status = poster.post("/webhooks/yookassa", _notification(item[1]))
        with lock:
            statuses.append(status)

    kassa, web = stack.procs[0].pid, stack.procs[1].pid
    postmaster = _postmaster()

    def postgres() -> list[tuple[int, bool | None]]:
        # The postmaster with its ended children: a backend that closes during the run (a
        # pool's overflow connection) is counted too, not only the ones still open.
        if not postmaster:
            return []
        members: list[tuple[int, bool | None]] = [(postmaster, True)]
        return members + [(pid, False) for pid in child_pids(postmaster)]

    def gunicorn() -> list[tuple[int, bool | None]]:
        return [(pid, False) for pid in (web, *child_pids(web))]

    meter = CpuMeter({"gunicorn": gunicorn, "emulator": lambda: [(kassa, False)],
                      "postgres": postgres,
                      "benchmark": lambda: [(os.getpid(), False)]}).start()
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(fire, payments))
    elapsed = time.monotonic() - started
    cpu = meter.stop()
    for poster in posters:
        poster.close()
    return {"elapsed": elapsed, "rate": len(payments) / elapsed, "cpu": cpu,
            "errors": sum(1 for s in statuses if s != 200),
            "credited": _credits(stack, [p for p, _ in payments])}


def duplicate_run(stack: Stack, payment: tuple[int, str]) -> dict[str, Any]:
    body = _notification(payment[1])
    barrier = threading.Barrier(DUPLICATES)
    statuses: list[int] = []
    lock = threading.Lock()

    def fire() -> None:
        poster = Poster(stack.web_port)
        barrier.wait(timeout=30)
        try:
            status = poster.post("/webhooks/yookassa", body)
        finally:
            poster.close()
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=fire) for _ in range(DUPLICATES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"answered_200": statuses.count(200), "credits": _credits(stack, [payment[0]])}


def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    stack = Stack(BenchDatabase(DB_NAME))
    try:
        start(stack, args)
        print(f"setting up {args.webhooks + 1} paid payments…", flush=True)
        payments = _payments(stack, args.webhooks + 1)
        warm = payments[: args.clients]
        rate_run(stack, warm, args.clients)  # warm-up: pools, imports, first connections
        measured = rate_run(stack, payments[args.clients:-1], args.clients)
        duplicates = duplicate_run(stack, payments[-1])
        measured["webhooks"] = len(payments) - args.clients - 1
        measured["gunicorn"] = stack.gunicorn
        return measured, duplicates
    except (requests.RequestException, OSError) as exc:
        raise BenchError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        stack.stop()
        stack.db.drop()


def report(measured: dict[str, Any], duplicates: dict[str, Any],
           args: argparse.Namespace) -> None:
    table([("webhooks", measured["webhooks"]), ("clients", args.clients),
           ("gunicorn", "{} workers × {} threads".format(*measured["gunicorn"])),
           ("wall time, s", measured["elapsed"]), ("webhooks/s", measured["rate"]),
           ("non-200 answers", measured["errors"]), ("credited", measured["credited"]),
           ("duplicates answered 200", f"{duplicates['answered_200']}/{DUPLICATES}"),
           ("credits from duplicates", duplicates["credits"])],
          title="verified YooKassa webhooks under gunicorn")
    cpu = measured["cpu"]
    per = 1000.0 / measured["webhooks"]
    table([(f"{name}, ms per webhook", cpu[name] * per)
           for name in ("gunicorn", "emulator", "postgres", "benchmark")]
          + [("machine busy, ms per webhook", cpu["machine busy"] * per),
             ("machine busy share", cpu["machine busy"] / cpu["machine total"])],
          title="CPU (all cores) during the rate run")
    figure("webhooks.rate", measured["rate"], "webhooks/s", ">= 200")
    figure("webhooks.errors", measured["errors"], "answers", "== 0")
    figure("webhooks.credited_ratio", measured["credited"] / measured["webhooks"], "ratio",
           "== 1")
    figure("webhooks.duplicate_credits", duplicates["credits"], "credits", "== 1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhooks", type=int, default=2000,
                        help="distinct notifications in the rate run (default 2000)")
    parser.add_argument("--clients", type=int, default=32,
                        help="concurrent senders (default 32)")
    parser.add_argument("--web-workers", type=int, default=None,
                        help="gunicorn workers (default: conf/gunicorn.conf.py's, as in "
                             "production)")
    parser.add_argument("--web-threads", type=int, default=None,
                        help="threads per gunicorn worker (default: conf/gunicorn.conf.py's)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="hard limit of the whole run, seconds (default 300)")
    args = parser.parse_args(argv)
    if min(args.webhooks, args.clients, args.web_workers or 1, args.web_threads or 1) < 1:
        parser.error("--webhooks, --clients, --web-workers and --web-threads must be positive")
    if args.timeout <= CLEANUP_MARGIN + 15:
        parser.error(f"--timeout must be above {CLEANUP_MARGIN + 15:.0f}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = HardStop(args.timeout - CLEANUP_MARGIN).arm()
    try:
        measured, duplicates = run(args)
    except Interrupted as exc:
        reason = "timed out" if str(exc) == "SIGALRM" else f"interrupted ({exc})"
        print(f"webhook benchmark {reason}", file=sys.stderr)
        return HardStop.exit_code(exc)
    except BenchError as exc:
        print(f"webhook benchmark could not run: {exc}", file=sys.stderr)
        return 1
    finally:
        stop.shield()
    report(measured, duplicates, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
