"""Flood benchmark: while a few users type non-stop, are everyone else's answers still fast?

Setup: the Telegram emulator in its own process at Telegram's limits (30 msg/s global,
1 msg/s per chat); the real bot (`python -m habitbot.bot`) on a throwaway database and a Redis
database of its own, at its production settings (TELEGRAM_GLOBAL_RATE=30,
TELEGRAM_CHAT_RATE=1, the default throttle and queue bound). Four flooding users send /help
as fast as `--flood-rate` each; fifty normal users send /help every `--period` seconds,
staggered. A normal message's reply time is from the user's message to the bot's answer,
both as the emulator recorded them.

Figures (one JSON line each, after a table for people):
- flood.normal_p95_ratio   95th percentile of the normal users' reply time ÷ the 1 s target
                           (a message never answered counts as infinitely late)
- flood.normal_unanswered  normal users' messages never answered within the grace period

Targets that are missed print ok=false; the exit code is non-zero only when the benchmark
could not run. PostgreSQL: the private test cluster (127.0.0.1:55432); Redis: BENCH_REDIS_URL's
server, else the private test Redis, database 8.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from common import (
    BenchDatabase,
    BenchError,
    Emulator,
    HardStop,
    Interrupted,
    child_env,
    figure,
    own_redis,
    percentile,
    stop_process,
    table,
)

TOKEN = "123456:BENCH"
DB_NAME = "bench_flood"
REDIS_DB = 8
GLOBAL_RATE = 30.0
CHAT_RATE = 1.0
TARGET_SECONDS = 1.0  # a normal user's answer within a second
FLOODER_BASE = 3_000_000
NORMAL_BASE = 3_100_000


def _flood(url: str, user: int, rate: float, until: float, sent: list[int]) -> None:
    from habitbot.sandbox.emulator_client import EmulatorClient

    with EmulatorClient(url) as client:
        tick = 0
        started = time.monotonic()
        while time.monotonic() < until:
            client.inject_message(user, "/help")
            sent.append(user)
            tick += 1
            delay = started + tick / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def _normal(url: str, users: list[int], offset: float, period: float, started: float,
            until: float, sent: list[tuple[int, int]]) -> None:
    """Each of `users` writes once per `period`, user i at offset + i·period/len(users)."""
    from habitbot.sandbox.emulator_client import EmulatorClient

    with EmulatorClient(url) as client:
        step = period / len(users)
        round_ = 0
        while True:
            for index, user in enumerate(users):
                at = started + offset + round_ * period + index * step
                delay = at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if time.monotonic() >= until:
                    return
                message = client.inject_message(user, "/help")
                sent.append((user, int(message["message_id"])))
            round_ += 1


def _reply_times(url: str, sent: list[tuple[int, int]]) -> list[float]:
    """Seconds from each sent message to the bot's first answer after it (inf: none)."""
    from habitbot.sandbox.emulator_client import EmulatorClient

    times: list[float] = []
    by_user: dict[int, list[int]] = {}
    for user, message_id in sent:
        by_user.setdefault(user, []).append(message_id)
    with EmulatorClient(url) as client:
        for user, ids in by_user.items():
            messages = client.messages(user)
            for message_id in ids:
                asked = next(m for m in messages if m["message_id"] == message_id)
                answer = next((m for m in messages if m["from"] == "bot"
                               and m["message_id"] > message_id), None)
                times.append(math.inf if answer is None
                             else max(0.0, answer["sent_at"] - asked["sent_at"]))
    return times


def _start_bot(emulator: Emulator, db: BenchDatabase, redis_url: str, log: Any,
               user_burst: int | None) -> subprocess.Popen:
    env = child_env()
    for name in ("ALERT_CHAT_ID", "USER_UPDATE_RATE", "USER_UPDATE_BURST", "CHAT_QUEUE_LIMIT"):
        env.pop(name, None)  # the shell's, not ours: production defaults
    env.update({"BOT_TOKEN": TOKEN, "DATABASE_URL": db.url, "REDIS_URL": redis_url,
                "TELEGRAM_API_URL": emulator.url, "TELEGRAM_GLOBAL_RATE": f"{GLOBAL_RATE:g}",
                "TELEGRAM_CHAT_RATE": f"{CHAT_RATE:g}", "LOG_DIR": tempfile.gettempdir()})
    if user_burst is not None:
        env["USER_UPDATE_BURST"] = str(user_burst)
    return subprocess.Popen([sys.executable, "-m", "habitbot.bot"], env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def _await_bot(url: str, proc: subprocess.Popen, timeout: float) -> None:
    from habitbot.sandbox.emulator_client import EmulatorClient

    with EmulatorClient(url) as client:
        user = NORMAL_BASE - 1
        sent = client.inject_message(user, "/help")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"the bot exited with {proc.returncode}")
            if any(m["from"] == "bot" and m["message_id"] > sent["message_id"]
                   for m in client.messages(user)):
                return
            time.sleep(0.2)
    raise BenchError(f"the bot did not answer within {timeout:.0f}s")


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    emulator = Emulator(TOKEN, extra_args=["--global-rate", f"{GLOBAL_RATE:g}",
                                           "--chat-rate", f"{CHAT_RATE:g}"])
    db = BenchDatabase(DB_NAME)
    redis_target = None
    bot = None
    log = tempfile.TemporaryFile(mode="w+")
    try:
        redis_target = own_redis(REDIS_DB, ttl=args.duration + 300)
        redis_target.clean()
        db.create()
        emulator.start()
        bot = _start_bot(emulator, db, redis_target.url, log, args.user_burst)
        _await_bot(emulator.url, bot, 60)

        flooded: list[int] = []
        asked: list[tuple[int, int]] = []
        started = time.monotonic()
        until = started + args.duration
        threads = [threading.Thread(target=_flood, daemon=True,
                                    args=(emulator.url, FLOODER_BASE + n, args.flood_rate,
                                          until, flooded)) for n in range(4)]
        normals = [NORMAL_BASE + n for n in range(args.users)]
        lanes = 5
        threads += [threading.Thread(target=_normal, daemon=True,
                                     args=(emulator.url, normals[lane::lanes],
                                           2.0 + lane * args.period / args.users,
                                           args.period, started, until, asked))
                    for lane in range(lanes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(args.duration + 60)
        time.sleep(args.grace)  # answers still on their way
        times = _reply_times(emulator.url, asked)
    finally:
        if bot is not None:
            stop_process(bot, grace=40)
        emulator.stop()
        if redis_target is not None:
            redis_target.clean()
            redis_target.release()
        db.drop()
    answered = [t for t in times if math.isfinite(t)]
    p95 = percentile(times, 95) if times else math.nan
    table([("normal messages", len(asked)), ("flood messages", len(flooded)),
           ("normal answered", len(answered)),
           ("normal p50 s", percentile(answered, 50) if answered else math.nan),
           ("normal p95 s (answered)", percentile(answered, 95) if answered else math.nan),
           ("normal max s", max(answered) if answered else math.nan)],
          title=f"flood: 4 users at {args.flood_rate:g}/s, {args.users} users every "
                f"{args.period:g}s, {args.duration:g}s")
    return [figure("flood.normal_p95_ratio", p95 / TARGET_SECONDS if math.isfinite(p95)
                   else None, "ratio", "<= 1.0"),
            figure("flood.normal_unanswered", float(len(times) - len(answered)), "messages",
                   "== 0")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--flood-rate", type=float, default=20.0,
                        help="messages per second of each flooding user")
    parser.add_argument("--users", type=int, default=50, help="normal users")
    parser.add_argument("--period", type=float, default=5.0,
                        help="seconds between two messages of a normal user")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds to wait for the last answers")
    parser.add_argument("--user-burst", type=int, default=None,
                        help="USER_UPDATE_BURST of the bot (1000: the throttle out of the way, "
                             "only the queue bound and parked replies protect the others)")
    parser.add_argument("--timeout", type=float, default=300.0, help="overall bound")
    args = parser.parse_args()
    stop = HardStop(args.timeout).arm()
    try:
        run(args)
    except Interrupted as exc:
        print(f"flood benchmark interrupted ({exc})", file=sys.stderr)
        return HardStop.exit_code(exc)
    except BenchError as exc:
        print(f"flood benchmark could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        stop.shield()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
