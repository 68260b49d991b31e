"""`habitbot payments …` — complete, reconcile, refund and show payments.

    habitbot payments complete --provider yookassa --id 2c5d…  [--force --reason "…"]
    habitbot payments reconcile [--since 2026-01-01T00:00 | --hours 48] [--fix]
    habitbot payments refund --provider stars --payment 42 [--amount 99.50] [--reason "…"]
    habitbot payments show 42 | --provider cryptobot --id 100001

Exit codes: 0 done (or nothing to do), 1 refused or failed (the message says why and what to
do), 2 bad arguments or configuration. These commands need the same environment as the
programs (BOT_TOKEN, DATABASE_URL, REDIS_URL, the provider variables).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import OperationalError

from habitbot.payments import money

PROVIDERS = ("yookassa", "cryptobot", "stars")
ID_FORMATS = {
    "yookassa": (re.compile(r"^[A-Za-z0-9_-]{1,64}$"), "a YooKassa payment id like "
                 "2c5d3a2b-000f-5000-9000-1b2c3d4e5f60"),
    "cryptobot": (re.compile(r"^\d{1,18}$"), "a Crypto Pay invoice id (digits)"),
    "stars": (re.compile(r"^[A-Za-z0-9_.:-]{1,128}$"), "a telegram_payment_charge_id"),
}
DEFAULT_HOURS = 48


def _fail(message: str, code: int = 1) -> int:
    print(f"FAIL: {message}", file=sys.stderr)
    return code


def _payment_id(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 2**63:
        raise argparse.ArgumentTypeError(f"not a payment id (a positive whole number): {raw!r}")
    return int(raw)


def _hours(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of hours: {raw!r}") from None
    if not 0 < value <= 24 * 366:
        raise argparse.ArgumentTypeError(f"hours must be within 0..8784: {raw!r}")
    return value


def _since(raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO date or time (e.g. 2026-01-31 or 2026-01-31T12:00Z): {raw!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_id(provider: str, provider_id: str | None) -> str | None:
    if provider_id is None:
        return None
    pattern, expected = ID_FORMATS[provider]
    if not pattern.match(provider_id):
        raise ValueError(f"--id {provider_id[:80]!r} is not {expected}")
    return provider_id


def _with_runtime(action: Callable[[Any], int]) -> int:
    """Build the runtime, run, close; a dead database is one clear line."""
    from habitbot.payments.operator import OperatorError
    from habitbot.runtime import build_runtime

    runtime = build_runtime("cli", "cli", configure_logging=False)
    try:
        return action(runtime)
    except OperatorError as exc:
        return _fail(str(exc))
    except ValueError as exc:
        return _fail(str(exc), code=2)
    except OperationalError:
        return _fail("database unreachable: check DATABASE_URL and that PostgreSQL is running")
    finally:
        runtime.close()


def _target(args: argparse.Namespace) -> dict[str, Any]:
    if (args.id is None) == (args.payment is None):
        raise ValueError("give exactly one of --id (the provider's id) or --payment (ours)")
    return {"provider_id": _check_id(args.provider, args.id), "payment_id": args.payment}


def cmd_complete(args: argparse.Namespace) -> int:
    from habitbot.payments import operator

    if args.reason and not args.force:
        return _fail("--reason is only used with --force", code=2)

    def run(runtime: Any) -> int:
        result = operator.complete(runtime, args.provider, force=args.force,
                                   reason=args.reason, **_target(args))
        if result.action == "refused":
            return _fail(result.message)
        print(f"OK: {result.message}")
        return 0

    return _with_runtime(run)


class ProgressBar:
    """`[#####.....] 12/40` on stderr, redrawn in place; silent when stderr is not a
    terminal (cron, pipes)."""

    def __init__(self, stream: Any = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        filled = self.width * done // total
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def cmd_reconcile(args: argparse.Namespace) -> int:
    from habitbot.payments import operator

    since = args.since or datetime.now(UTC) - timedelta(hours=args.hours or DEFAULT_HOURS)

    def run(runtime: Any) -> int:
        report = operator.reconcile(runtime, since, fix=args.fix, progress=ProgressBar())
        print(f"checked {report.checked} payment(s) created since "
              f"{since.astimezone(UTC):%Y-%m-%d %H:%M} UTC")
        for d in report.differences:
            where = f"payment {d.payment_id}" if d.payment_id else "no payment of ours"
            line = (f"DIFF {d.provider} {d.provider_id or '-'} ({where}): ours {d.ours}, "
                    f"provider {d.theirs} — {d.note}")
            if d.fixed:
                line += f" [fixed: {d.fixed}]"
            elif args.fix and d.fixable:
                line += " [not fixed]"
            elif d.fixable:
                line += " [--fix settles it]"
            print(line)
        for error in report.provider_errors:
            print(f"ERROR {error}")
        unresolved = [d for d in report.differences
                      if not (d.fixed and not d.fixed.startswith("not fixed"))]
        if not report.differences and not report.provider_errors:
            print("OK: no differences")
            return 0
        fixed = len(report.differences) - len(unresolved)
        summary = f"{len(report.differences)} difference(s), {fixed} fixed"
        if unresolved or report.provider_errors:
            return _fail(f"{summary}; {len(unresolved)} need attention, "
                         f"{len(report.provider_errors)} provider error(s)")
        print(f"OK: {summary}")
        return 0

    return _with_runtime(run)


def cmd_refund(args: argparse.Namespace) -> int:
    from habitbot.payments import operator

    def run(runtime: Any) -> int:
        target = _target(args)
        amount_minor = None
        if args.amount is not None:
            row = operator.locate(runtime, args.provider, **target)
            try:
                amount_minor = money.to_minor(args.amount, row.currency)
            except ValueError:
                raise ValueError(f"--amount {args.amount!r} is not an amount in {row.currency} "
                                 "(e.g. 99.50)") from None
            if amount_minor <= 0:
                raise ValueError("--amount must be positive")
        result = operator.refund(runtime, args.provider, amount_minor=amount_minor,
                                 reason=args.reason, **target)
        print(f"OK: {result.message}")
        return 0

    return _with_runtime(run)


def cmd_show(args: argparse.Namespace) -> int:
    from habitbot.payments import operator

    def run(runtime: Any) -> int:
        payment_id = args.payment_id
        if payment_id is None:
            if not args.provider or not args.id:
                raise ValueError("give a payment id, or --provider and --id")
            payment_id = operator.locate(runtime, args.provider,
                                         _check_id(args.provider, args.id)).id
        print("\n".join(operator.show(runtime, payment_id)))
        return 0

    return _with_runtime(run)


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", required=True, choices=PROVIDERS)
    parser.add_argument("--id", help="the provider's payment id (YooKassa payment id, Crypto "
                                     "Pay invoice id, Stars charge id)")
    parser.add_argument("--payment", type=_payment_id, help="our payment id instead of --id")


def register(subparsers: Any) -> None:
    """Add `payments` and its actions to the `habitbot` parser."""
    payments = subparsers.add_parser("payments", help="complete, reconcile, refund, show")
    sub = payments.add_subparsers(dest="payments_command", required=True, metavar="ACTION")

    complete = sub.add_parser(
        "complete", help="confirm a payment with the provider and credit it once",
        description="Asks the provider; if it confirms the payment, credits it through the "
                    "same exactly-once path as the webhooks and tells the user. Refuses "
                    "when the provider does not confirm, unless --force with --reason.")
    _target_arguments(complete)
    complete.add_argument("--force", action="store_true",
                          help="credit even though the provider does not confirm")
    complete.add_argument("--reason", help="why (required with --force; stored)")
    complete.set_defaults(func=cmd_complete)

    reconcile = sub.add_parser(
        "reconcile", help="compare our payments with the providers; --fix settles them",
        description="Compares our pending and succeeded payments created in the window with "
                    "YooKassa and Crypto Pay, and the providers' paid payments with ours. "
                    "--fix credits (once) what was paid, closes what was canceled and applies "
                    "missing refunds; money is never taken back automatically. Exit 1 when a "
                    "difference is left or a provider failed.")
    window = reconcile.add_mutually_exclusive_group()
    window.add_argument("--since", type=_since, help="ISO date or time (UTC unless given)")
    window.add_argument("--hours", type=_hours,
                        help=f"the last N hours (default {DEFAULT_HOURS})")
    reconcile.add_argument("--fix", action="store_true", help="settle what can be settled")
    reconcile.set_defaults(func=cmd_reconcile)

    refund = sub.add_parser(
        "refund", help="refund a payment at the provider and apply it here once",
        description="YooKassa: POST /refunds (partial with --amount); Telegram Stars: "
                    "refundStarPayment (in full). The balance is debited or premium shortened "
                    "by the refunded share; rerunning after a failure never refunds twice.")
    _target_arguments(refund)
    refund.add_argument("--amount", help="in the payment's currency, e.g. 99.50 "
                                         "(default: everything not yet refunded)")
    refund.add_argument("--reason", help="stored with the refund")
    refund.set_defaults(func=cmd_refund)

    show = sub.add_parser("show", help="one payment: status, amounts, credits, refunds")
    show.add_argument("payment_id", nargs="?", type=_payment_id)
    show.add_argument("--provider", choices=PROVIDERS)
    show.add_argument("--id")
    show.set_defaults(func=cmd_show)
