"""Sender benchmark: does the shared Redis limiter use Telegram's budget without 429s, and do
replies stay fast while a reminder burst runs?

Setup: the Telegram emulator in its own process at Telegram's default limits (30 msg/s
global, 1 msg/s per chat, burst 3); several sender processes, each with a few threads, push a
burst of bulk-lane messages to distinct chats through `Sender` + `RateLimiter` sharing one
Redis; meanwhile this process sends interactive-lane messages at a steady pace and times them.

Figures (one JSON line each, after a table for people):
- sender.rate_ratio       all sends during the burst per second ÷ the 30/s global limit
- sender.429_share        429 answers ÷ sendMessage requests
- sender.interactive_p95  95th percentile of an interactive send_message call, seconds
- sender.lost             bulk messages never delivered

Targets that are missed print ok=false; the exit code is non-zero only when the benchmark
could not run. Redis: BENCH_REDIS_URL, else REDIS_URL, else the private test Redis on
127.0.0.1:56380, database 4.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import queue
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from typing import Any

from common import BenchError, Emulator, figure, find_redis, percentile, stop_process, table

TOKEN = "123456:BENCH"
GLOBAL_RATE = 30.0
CHAT_RATE = 1.0
BULK_CHAT_BASE = 1_000_000
INTERACTIVE_CHAT_BASE = 2_000_000
TEARDOWN_MARGIN = 20.0  # the burst stops this long before --timeout
CLEANUP_MARGIN = 10.0  # the hard stop (SIGALRM) comes this long before --timeout


class Interrupted(Exception):
    pass


_stopping = False


def _raise_interrupted(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM/SIGALRM end the run once; during the cleanup they are ignored."""
    global _stopping
    if _stopping:
        return
    _stopping = True
    raise Interrupted(signal.Signals(signum).name)


def _shield_cleanup() -> None:
    global _stopping
    _stopping = True
    signal.alarm(0)


def _build_sender(api_url: str, redis_url: str, overrides: dict[str, Any]):
    from habitbot.redis_client import make_redis
    from habitbot.telegram.client import BotApiClient
    from habitbot.telegram.limiter import Limits, RateLimiter
    from habitbot.telegram.sender import Sender

    conn = make_redis(redis_url)
    client = BotApiClient(api_url, TOKEN)
    limits = Limits(**{"global_rate": GLOBAL_RATE, "chat_rate": CHAT_RATE, **overrides})
    limiter = RateLimiter(conn, limits)
    return Sender(client, conn, limiter), client, conn


# ---------------------------------------------------------------- bulk sender processes

def bulk_worker(index: int, api_url: str, redis_url: str, overrides: dict[str, Any],
                chat_ids: list[int], threads: int, go: Any, results: Any) -> None:
    """One sender process: `threads` threads drain `chat_ids`, one bulk message per chat."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    logging.basicConfig(level=logging.ERROR)
    try:
        sender, client, _ = _build_sender(api_url, redis_url, overrides)
        work: queue.SimpleQueue[int] = queue.SimpleQueue()
        for chat_id in chat_ids:
            work.put(chat_id)
        lock = threading.Lock()
        outcome: Counter[str] = Counter()
        warmed = threading.Barrier(threads + 1)

        def drain() -> None:
            client.raw_request("getMe")  # open this thread's keep-alive connection
            warmed.wait()
            go.wait()
            while True:
                try:
                    chat_id = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    sender.send_message(chat_id, f"bulk {chat_id}", lane="bulk")
                    key = "sent"
                except Exception as exc:
                    key = f"error:{type(exc).__name__}: {exc}"[:160]
                with lock:
                    outcome[key] += 1

        pool = [threading.Thread(target=drain, name=f"bulk-{index}-{n}", daemon=True)
                for n in range(threads)]
        for thread in pool:
            thread.start()
        warmed.wait(timeout=30)
        results.put(("ready", index, None))
        go.wait()
        started = time.monotonic()
        for thread in pool:
            thread.join()
        sender.flush_counters()
        results.put(("done", index, {"outcome": dict(outcome),
                                     "seconds": time.monotonic() - started}))
    except Exception:
        results.put(("error", index, traceback.format_exc()))


# ---------------------------------------------------------------- the run

def _await(results: Any, kind: str, count: int, deadline: float) -> dict[int, Any]:
    got: dict[int, Any] = {}
    while len(got) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(f"sender processes not {kind} in time ({len(got)}/{count})")
        try:
            what, index, payload = results.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if what == "error":
            raise BenchError(f"sender process {index} failed:\n{payload}")
        if what == kind:
            got[index] = payload
    return got


def _limiter_keys(chat_ids: list[int]) -> list[str]:
    from habitbot.telegram.limiter import BULK_KEY, DEMAND_KEY, GLOBAL_KEY, PAUSE_KEY

    chat_keys = [f"{GLOBAL_KEY.rsplit(':', 1)[0]}:chat:{chat_id}" for chat_id in chat_ids]
    return [GLOBAL_KEY, BULK_KEY, PAUSE_KEY, DEMAND_KEY, *chat_keys]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from habitbot.sandbox.emulator_client import EmulatorClient
    from habitbot.telegram.sender import metrics

    started = time.monotonic()
    burst_deadline = started + args.timeout - TEARDOWN_MARGIN
    bulk_ids = [BULK_CHAT_BASE + n for n in range(args.messages)]
    redis_target = find_redis()
    emulator = Emulator(TOKEN)
    procs: list[Any] = []
    conn = None
    client = None
    interactive_ids: list[int] = []
    try:
        redis_target.clean(_limiter_keys(bulk_ids))
        emulator.start()
        ctx = mp.get_context("spawn")
        go = ctx.Event()
        results = ctx.Queue()
        for index in range(args.processes):
            proc = ctx.Process(
                target=bulk_worker, name=f"bench-sender-{index}", daemon=True,
                args=(index, emulator.url, redis_target.url, args.limit,
                      bulk_ids[index::args.processes],
                      args.threads, go, results))
            proc.start()
            procs.append(proc)

        sender, client, conn = _build_sender(emulator.url, redis_target.url, args.limit)
        client.raw_request("getMe")
        _await(results, "ready", args.processes, time.monotonic() + 60)
        counts_before = metrics(conn)

        latencies: list[float] = []
        interactive_errors: Counter[str] = Counter()
        done: dict[int, Any] = {}
        go.set()
        t_go = time.monotonic()
        period = 1.0 / args.interactive_rate
        tick = 0
        while len(done) < args.processes:
            now = time.monotonic()
            if now > burst_deadline:
                print(f"WARNING: burst not finished within {args.timeout - TEARDOWN_MARGIN:.0f}s;"
                      " stopping the senders", file=sys.stderr)
                break
            next_at = t_go + tick * period
            if now < next_at:
                try:
                    what, index, payload = results.get(timeout=next_at - now)
                except queue.Empty:
                    continue
                if what == "error":
                    raise BenchError(f"sender process {index} failed:\n{payload}")
                if what == "done":
                    done[index] = payload
                continue
            chat_id = INTERACTIVE_CHAT_BASE + tick
            interactive_ids.append(chat_id)
            tick += 1
            t0 = time.perf_counter()
            try:
                sender.send_message(chat_id, f"reply {tick}", lane="interactive")
                latencies.append(time.perf_counter() - t0)
            except Exception as exc:
                interactive_errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
        burst_seconds = time.monotonic() - t_go
        finished = len(done) == args.processes
        for proc in procs:
            if finished:
                proc.join(5)
            stop_process(proc)

        with EmulatorClient(emulator.url) as control:
            stats = control.stats()
            sends = control.sends()
        sender_counts = {key: value - counts_before.get(key, 0)
                         for key, value in metrics(conn).items()}
    finally:
        _shield_cleanup()
        for proc in procs:
            stop_process(proc)
        if client is not None:
            client.close()
        if conn is not None:
            conn.close()
        emulator.stop()
        try:
            redis_target.clean(_limiter_keys(bulk_ids + interactive_ids))
        except Exception as exc:
            print(f"WARNING: could not clean Redis: {exc}", file=sys.stderr)

    bulk_set = set(bulk_ids)
    messages = [s for s in sends if s["method"] == "sendMessage"]
    bulk = [s for s in messages if s["chat_id"] in bulk_set]
    bulk_outcome: Counter[str] = Counter()
    for payload in done.values():
        bulk_outcome.update(payload["outcome"])
    delivered = len({s["chat_id"] for s in bulk})
    if bulk:
        first = min(s["ts"] for s in bulk)
        last = max(s["ts"] for s in bulk)
        in_burst = [s for s in messages if first <= s["ts"] <= last]
        span = last - first
    else:
        in_burst, span = [], 0.0
    rate = len(in_burst) / span if span > 0 else float("nan")
    bulk_rate = len(bulk) / span if span > 0 else float("nan")
    requests = int(stats["requests"].get("sendMessage", 0))
    rate_limited = int(stats["rate_limited"])
    return {
        "messages": args.messages,
        "layout": f"{args.processes} processes x {args.threads} threads",
        "overrides": args.limit,
        "burst_seconds": burst_seconds,
        "finished": finished,
        "span": span,
        "in_burst": len(in_burst),
        "rate": rate,
        "bulk_rate": bulk_rate,
        "max_sent_in_1s": stats.get("max_sent_in_1s"),
        "requests": requests,
        "rate_limited": rate_limited,
        "share_429": rate_limited / requests if requests else float("nan"),
        "errors": stats.get("errors", {}),
        "interactive_sent": len(latencies),
        "interactive_errors": dict(interactive_errors),
        "latencies": latencies,
        "delivered": delivered,
        "duplicates": len(bulk) - delivered,
        "lost": args.messages - delivered,
        "bulk_outcome": dict(bulk_outcome),
        "sender_metrics": sender_counts,
    }


def report(r: dict[str, Any]) -> None:
    lat = r["latencies"]
    counts = r["sender_metrics"]
    rows: list[tuple[str, Any]] = [
        ("bulk messages", r["messages"]),
        ("senders", r["layout"]),
        ("Limits overridden", r["overrides"] or "no (production defaults)"),
        ("burst wall time, s", r["burst_seconds"]),
        ("burst finished", "yes" if r["finished"] else "no: senders stopped at the deadline"),
        ("first..last bulk send, s", r["span"]),
        ("sends in that span (all lanes)", r["in_burst"]),
        ("achieved rate, msg/s", r["rate"]),
        ("  of which bulk, msg/s", r["bulk_rate"]),
        ("rate / limit", r["rate"] / GLOBAL_RATE),
        ("max sends in any 1 s", r["max_sent_in_1s"]),
        ("sendMessage requests", r["requests"]),
        ("429 answers", r["rate_limited"]),
        ("429 share", r["share_429"]),
        ("interactive sends", r["interactive_sent"]),
        ("interactive p50 / p95 / max, s",
         " / ".join(f"{v:.3f}" for v in (percentile(lat, 50), percentile(lat, 95),
                                          max(lat, default=float("nan"))))),
        ("bulk delivered / lost / duplicated",
         f"{r['delivered']} / {r['lost']} / {r['duplicates']}"),
        ("limiter wait, bulk / interactive, s",
         f"{counts.get('bulk:wait_ms', 0) / 1000:.1f} / "
         f"{counts.get('interactive:wait_ms', 0) / 1000:.2f}"),
    ]
    for label, data in (("emulator errors", r["errors"]),
                        ("interactive failures", r["interactive_errors"]),
                        ("bulk failures", {k: v for k, v in r["bulk_outcome"].items()
                                           if k != "sent"})):
        if data:
            rows.append((label, data))
    table(rows, "sender benchmark (emulator at 30 msg/s global, 1 msg/s per chat, burst 3)")

    figure("sender.rate_ratio", r["rate"] / GLOBAL_RATE, "ratio", ">= 0.97")
    figure("sender.429_share", r["share_429"], "ratio", "<= 0.001")
    figure("sender.interactive_p95", percentile(lat, 95), "s", "<= 1.0")
    figure("sender.lost", r["lost"], "messages", "== 0")


def _limit_overrides(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, Any]:
    import dataclasses

    from habitbot.telegram.limiter import Limits

    fields = {f.name: f.type for f in dataclasses.fields(Limits)}
    overrides: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            parser.error(f"--limit {item!r}: expected FIELD=VALUE, FIELD one of {list(fields)}")
        try:
            overrides[name] = int(value) if fields[name] in (int, "int") else float(value)
        except ValueError:
            parser.error(f"--limit {item!r}: {value!r} is not a number")
    return overrides


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=600,
                        help="bulk messages in the burst (default 600: ~20 s at 30/s)")
    parser.add_argument("--processes", type=int, default=2, help="sender processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per sender process")
    parser.add_argument("--interactive-rate", type=float, default=2.0,
                        help="interactive sends per second during the burst")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="hard limit of the whole run, seconds")
    parser.add_argument("--limit", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a field of telegram.limiter.Limits, e.g. bulk_share=1.0 "
                             "(repeatable; the figures then describe that setting)")
    args = parser.parse_args(argv)
    args.limit = _limit_overrides(parser, args.limit)
    if args.messages < 1 or args.processes < 1 or args.threads < 1:
        parser.error("--messages, --processes and --threads must be positive")
    if args.interactive_rate <= 0 or args.timeout <= TEARDOWN_MARGIN + 10:
        parser.error(f"--interactive-rate must be positive, --timeout above "
                     f"{TEARDOWN_MARGIN + 10:.0f}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(sig, _raise_interrupted)
    signal.alarm(int(args.timeout - CLEANUP_MARGIN))
    try:
        result = run(args)
    except Interrupted as exc:
        reason = "timed out" if str(exc) == "SIGALRM" else f"interrupted ({exc})"
        print(f"sender benchmark {reason}", file=sys.stderr)
        return 124 if str(exc) == "SIGALRM" else 130
    except BenchError as exc:
        print(f"sender benchmark could not run: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
