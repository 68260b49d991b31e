"""`habitbot` — the operator's command line.

Every command prints what it did, exits 0 on success and non-zero with a one-line reason on
failure; secrets are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from habitbot.config import ConfigError, load_settings
from habitbot.db import make_engine
from habitbot.logs import setup_logging

Handler = Callable[[argparse.Namespace], int]


def _fail(message: str, code: int = 1) -> int:
    print(f"FAIL: {message}", file=sys.stderr)
    return code


def _database_url() -> str:
    """The CLI's schema commands need only DATABASE_URL, not the bot token."""
    try:
        settings = load_settings()
        return settings.database_url
    except ConfigError:
        url = os.environ.get("DATABASE_URL", "").strip()
        if not url:
            raise ConfigError("DATABASE_URL is not set: expected a postgresql:// URL") from None
        return url


def cmd_deploy_gate(args: argparse.Namespace) -> int:
    from habitbot.services.schema import GateError, run_deploy_gate

    engine = make_engine(_database_url(), "cli", connect_timeout=args.connect_timeout)
    try:
        report = run_deploy_gate(engine, lock_wait_seconds=args.lock_wait,
                                 upgrade=not args.no_upgrade)
    except GateError as exc:
        return _fail(f"deploy gate: {exc}")
    finally:
        engine.dispose()
    print(f"OK: deploy gate passed, {report.summary}")
    return 0


def cmd_check_schema(args: argparse.Namespace) -> int:
    from habitbot.services.schema import check_schema

    engine = make_engine(_database_url(), "cli", connect_timeout=args.connect_timeout)
    try:
        report = check_schema(engine)
    except OperationalError:
        return _fail("database unreachable: check DATABASE_URL and that PostgreSQL is running")
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps({"ok": report.ok, "current": report.current, "heads": report.heads,
                          "problems": report.problems}))
    elif report.ok:
        print(f"OK: {report.summary}")
    else:
        print("Schema does not match the code:")
        for problem in report.problems:
            print(f"  - {problem}")
        print("Fix: run `make deploy-gate` (or `habitbot deploy-gate`).")
    return 0 if report.ok else 1


def cmd_alert_test(args: argparse.Namespace) -> int:
    from habitbot.runtime import build_runtime

    runtime = build_runtime("cli", "cli", configure_logging=False)
    try:
        alert = runtime.alerts.raise_alert("INFO", "alert_test", args.message,
                                           fingerprint=f"alert_test:{args.message}")
    finally:
        runtime.close()
    print(f"alert {alert.status}: {alert.text}")
    if alert.status == "logged":
        print("ALERT_CHAT_ID is not set: alerts are only logged and stored.")
    return 0 if alert.status in ("sent", "logged", "suppressed") else 1


def _telegram_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a Telegram user id: {raw!r}") from None
    if value <= 0 or value >= 2**63:
        raise argparse.ArgumentTypeError(f"not a Telegram user id: {raw!r}")
    return value


def cmd_fsm_reset(args: argparse.Namespace) -> int:
    import redis

    from habitbot.redis_client import make_redis
    from habitbot.services.conversations import ConversationStore

    url = os.environ.get("REDIS_URL", "").strip()
    if not url:
        raise ConfigError("REDIS_URL is not set: expected a redis:// URL")
    conn = make_redis(url)
    try:
        store = ConversationStore(conn)
        conn.ping()
        state = store.get(args.telegram_id).state
        cleared = store.clear(args.telegram_id)
    except redis.RedisError as exc:
        return _fail(f"redis unreachable ({type(exc).__name__}): check REDIS_URL")
    finally:
        conn.close()
    if cleared:
        print(f"OK: conversation of user {args.telegram_id} reset (was in state {state!r})")
    else:
        print(f"OK: user {args.telegram_id} had no conversation in progress")
    return 0


def _redis():
    from habitbot.redis_client import make_redis

    url = os.environ.get("REDIS_URL", "").strip()
    if not url:
        raise ConfigError("REDIS_URL is not set: expected a redis:// URL")
    return make_redis(url)


def cmd_reminders_run_once(args: argparse.Namespace) -> int:
    from habitbot.runtime import build_runtime
    from workers.reminders import _tick

    runtime = build_runtime("cli", "cli", configure_logging=False)
    try:
        handled = _tick(runtime)
    finally:
        runtime.close()
    print(f"OK: reminder tick done, {handled} schedules claimed or re-dispatched "
          "(sends are queued for the workers)")
    return 0


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from workers import admin

    conn = _redis()
    try:
        print(f"{'queue':<12}{'queued':>8}{'running':>9}{'failed':>8}")
        for c in admin.counts(conn):
            print(f"{c.name:<12}{c.queued:>8}{c.started:>9}{c.failed:>8}")
        print("\nperiodic jobs (id, next run UTC, interval s):")
        for job_id, when, interval in admin.periodic(conn):
            print(f"  {job_id:<28} {when:%Y-%m-%d %H:%M:%S}  {interval}")
    finally:
        conn.close()
    return 0


def cmd_jobs_failed(args: argparse.Namespace) -> int:
    from workers import admin

    conn = _redis()
    try:
        jobs = admin.failed(conn)
    finally:
        conn.close()
    if not jobs:
        print("no failed jobs")
    for job in jobs:
        ended = f"{job.ended_at:%Y-%m-%d %H:%M:%S}" if job.ended_at else "-"
        print(f"{job.id}  {job.queue}  {job.func}  {ended}  {job.error}")
    return 0


def cmd_jobs_requeue(args: argparse.Namespace) -> int:
    from workers import admin

    if not args.all and not args.job_id:
        return _fail("give a job id or --all")
    conn = _redis()
    try:
        done = admin.requeue(conn, None if args.all else args.job_id)
    finally:
        conn.close()
    if not done:
        return _fail(f"no failed job {args.job_id!r}" if args.job_id else "no failed jobs")
    print(f"OK: requeued {len(done)} job(s): {', '.join(done)}")
    return 0


def cmd_jobs_remove(args: argparse.Namespace) -> int:
    from workers import admin

    conn = _redis()
    try:
        removed = admin.remove(conn, args.job_id)
    finally:
        conn.close()
    if not removed:
        return _fail(f"no job {args.job_id!r}")
    print(f"OK: removed {args.job_id} (a periodic job is registered again, fresh, by the "
          "running scheduler within seconds)")
    return 0


def cmd_users_show(args: argparse.Namespace) -> int:
    from habitbot.services.operator import user_report

    engine = make_engine(_database_url(), "cli")
    try:
        report = user_report(engine, args.telegram_id)
    finally:
        engine.dispose()
    if report is None:
        return _fail(f"no user with Telegram id {args.telegram_id}")
    print("\n".join(report.lines))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from habitbot.payments import notify
    from habitbot.services.health import HealthChecker
    from habitbot.services.operator import system_counts
    from habitbot.telegram.deferred import waiting_replies
    from workers import admin

    engine = make_engine(_database_url(), "cli")
    conn = _redis()
    checker = HealthChecker(engine, conn)
    try:
        overall, checks = checker.run()
        print(f"health: {overall}")
        for name, result in checks.items():
            detail = result.get("error") or (f"{result['age_seconds']}s ago"
                                             if "age_seconds" in result else "")
            print(f"  {name:<10} {'ok' if result['ok'] else 'FAIL'}  {detail}")
        if checks["database"]["ok"]:
            for label, value in system_counts(engine).items():
                print(f"{label:<38}{value:>10}")
        if checks["redis"]["ok"]:
            for c in admin.counts(conn):
                print(f"queue {c.name:<10} queued {c.queued:>6}  running {c.started:>4}  "
                      f"failed {c.failed:>4}")
            print(f"{'replies waiting for Telegram':<38}{waiting_replies(conn):>10}")
            print(f"{'payment notices waiting':<38}{notify.pending(conn):>10}")
    finally:
        checker.close()
        conn.close()
        engine.dispose()
    return 0 if overall != "fail" else 1


def cmd_sandbox_telegram(args: argparse.Namespace) -> int:
    from habitbot.sandbox.telegram_emulator import main as emulator_main

    return emulator_main(["--host", args.host, "--port", str(args.port), "--token", args.token])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="habitbot", description="HabitBot operator tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gate = sub.add_parser("deploy-gate", help="upgrade the schema to head and verify it")
    gate.add_argument("--no-upgrade", action="store_true", help="only verify")
    gate.add_argument("--lock-wait", type=float, default=120.0,
                      help="seconds to wait for another gate (default 120)")
    gate.add_argument("--connect-timeout", type=int, default=5)
    gate.set_defaults(func=cmd_deploy_gate)

    check = sub.add_parser("check-schema", help="verify revision and columns; no changes")
    check.add_argument("--json", action="store_true")
    check.add_argument("--connect-timeout", type=int, default=5)
    check.set_defaults(func=cmd_check_schema)

    alert = sub.add_parser("alert", help="operator alerts")
    alert_sub = alert.add_subparsers(dest="alert_command", required=True, metavar="ACTION")
    alert_test = alert_sub.add_parser("test", help="send a test alert to ALERT_CHAT_ID")
    alert_test.add_argument("--message", default="test alert from habitbot alert test")
    alert_test.set_defaults(func=cmd_alert_test)

    fsm = sub.add_parser("fsm", help="conversation state of users")
    fsm_sub = fsm.add_subparsers(dest="fsm_command", required=True, metavar="ACTION")
    fsm_reset = fsm_sub.add_parser("reset", help="forget a user's dialog in progress")
    fsm_reset.add_argument("telegram_id", type=_telegram_id)
    fsm_reset.set_defaults(func=cmd_fsm_reset)

    status = sub.add_parser("status", help="one-screen summary: health, users, reminders, queues")
    status.set_defaults(func=cmd_status)

    users = sub.add_parser("users", help="look at users")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    show = users_sub.add_parser("show", help="one user: settings, plan, habits, deliveries")
    show.add_argument("telegram_id", type=_telegram_id)
    show.set_defaults(func=cmd_users_show)

    rem = sub.add_parser("reminders", help="reminder delivery")
    rem_sub = rem.add_subparsers(dest="reminders_command", required=True, metavar="ACTION")
    run_once = rem_sub.add_parser("run-once", help="run a reminder tick now")
    run_once.set_defaults(func=cmd_reminders_run_once)

    jobs = sub.add_parser("jobs", help="queues and background jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    jobs_sub.add_parser("list", help="queue lengths and periodic jobs").set_defaults(
        func=cmd_jobs_list)
    jobs_sub.add_parser("failed", help="failed jobs with their last error").set_defaults(
        func=cmd_jobs_failed)
    requeue = jobs_sub.add_parser("requeue", help="run failed jobs again")
    requeue.add_argument("job_id", nargs="?")
    requeue.add_argument("--all", action="store_true")
    requeue.set_defaults(func=cmd_jobs_requeue)
    remove = jobs_sub.add_parser("remove", help="remove a (stuck) job")
    remove.add_argument("job_id")
    remove.set_defaults(func=cmd_jobs_remove)

    sandbox = sub.add_parser("sandbox", help="local emulators")
    sandbox_sub = sandbox.add_subparsers(dest="sandbox_command", required=True,
                                         metavar="WHAT")
    tg = sandbox_sub.add_parser("telegram", help="run the Telegram Bot API emulator")
    tg.add_argument("--host", default="127.0.0.1")
    tg.add_argument("--port", type=int, default=8081)
    tg.add_argument("--token", default="123456:SANDBOX")
    tg.set_defaults(func=cmd_sandbox_telegram)

    from habitbot.cli_payments import register as register_payments
    register_payments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("cli")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", code=2)
    except SQLAlchemyError as exc:
        return _fail(f"database error: {type(exc).__name__}")
    except RedisError as exc:
        return _fail(f"redis unreachable ({type(exc).__name__}): check REDIS_URL")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
