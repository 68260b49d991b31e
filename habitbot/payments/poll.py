"""Asking the providers about open payments: the fallback for a webhook that never came.

A webhook can be lost (our web program was down through all of the provider's retries, a
proxy dropped it, Crypto Pay stopped retrying). Without this the payment would wait for the
user's "check payment" button or an operator. Every `PAYMENT_POLL_INTERVAL` seconds the
scheduler's `payment_poll` job (`workers.payment_poll.tick`) takes the open YooKassa and
Crypto Pay payments still inside the provider's window, picks those whose next check is due
(at most `PAYMENT_POLL_BATCH`, the longest-waiting first) and asks: YooKassa
`GET /payments/{id}` one by one, Crypto Pay `getInvoices` with up to 100 ids a call. The answer
goes through `service.settle_*`, the same exactly-once claim the webhooks, the button and
`payments complete` use; a credit queues the same "payment received" notice as a webhook.
Expired or canceled at the provider closes the payment as the webhook would.

Backoff per payment, derived from its age: the first check a minute after it was created,
then each one after as long again as the payment's age (1, 2, 4, 8 … minutes), at most
`BACKOFF_CAP` apart. The next check time is kept in a Redis sorted set, so a restart keeps the
schedule; a Redis emptied by a restart only makes every open payment due once more.

A provider that fails (timeouts, 5xx, 429 after the client's retries, or a refusal such as bad
credentials) is not asked again in this run and nothing is marked: its payments stay due and
the next run asks again. A run starts no new question after `BUDGET_SECONDS`, so it ends well
inside its job timeout however slow a provider is.

Windows: Crypto Pay invoices expire after `CRYPTOBOT_INVOICE_EXPIRES_IN`; they are asked until
`GRACE` past that, so the check that sees `expired` (no update is sent for it) always comes.
YooKassa cancels a pending card payment about an hour after the payer opened the payment form
(`expired_on_confirmation`); the form may be opened later and other methods confirm later, so
YooKassa payments are asked for a day. What is still open after its window is left to
`habitbot payments reconcile`.

Refunds made outside our commands (in YooKassa's dashboard) arrive as `refund.succeeded`
notifications only; every `REFUNDS_EVERY` the same job lists YooKassa's refunds of the last
`REFUNDS_WINDOW` once and applies those we have not recorded through the webhook's own path
(`notifications.apply_yookassa_refund`: once, with the user's notice).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import redis
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from habitbot import metrics
from habitbot.models import Payment, PaymentRefund
from habitbot.payments import notifications, notify, service
from habitbot.payments.cryptobot import MalformedInvoice
from habitbot.payments.http import ProviderError
from habitbot.payments.yookassa import MalformedAnswer
from habitbot.redis_client import KEY_PREFIX
from habitbot.services import billing
from habitbot.services.billing import BillingError

if TYPE_CHECKING:
    from habitbot.config import Settings
    from habitbot.runtime import Runtime

log = logging.getLogger(__name__)

SCHEDULE_KEY = f"{KEY_PREFIX}payments:poll:next"  # payment id -> next check (unix time)
FIRST_CHECK = timedelta(minutes=1)
BACKOFF_CAP = timedelta(minutes=15)
GRACE = 2 * BACKOFF_CAP
YOOKASSA_WINDOW = timedelta(days=1)
BUDGET_SECONDS = 120.0
# Open payments looked at per run, before the due ones are picked: a bound on one query.
MAX_CANDIDATES = 10_000
# Outcomes after which asking again changes nothing (the row is final, or the provider's
# record disagrees with ours and an operator was alerted).
FINISHED = ("credited", "already_final", "canceled", "mismatch", "unknown")
REFUNDS_KEY = f"{KEY_PREFIX}payments:poll:refunds"  # when refunds were last listed (unix time)
REFUNDS_EVERY = timedelta(minutes=10)
REFUNDS_WINDOW = timedelta(days=1)


def windows(settings: Settings) -> dict[str, timedelta]:
    """How long after its creation a payment of each provider is asked about."""
    return {"yookassa": YOOKASSA_WINDOW,
            "cryptobot": timedelta(seconds=settings.cryptobot_invoice_expires_in) + GRACE}


class Schedule:
    """When each open payment is asked next (a Redis sorted set: payment id -> unix time)."""

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    def due(self, rows: Sequence[Payment], now: datetime) -> list[Payment]:
        """The rows whose check is due, the longest-waiting first."""
        if not rows:
            return []
        scores = self.conn.zmscore(SCHEDULE_KEY, [str(row.id) for row in rows])
        moment = now.timestamp()
        waiting: list[tuple[float, int, Payment]] = []
        for row, score in zip(rows, scores, strict=True):
            when = (row.created_at + FIRST_CHECK).timestamp() if score is None else score
            if when <= moment:
                waiting.append((when, row.id, row))
        waiting.sort(key=lambda item: item[:2])
        return [row for _, _, row in waiting]

    def later(self, row: Payment, now: datetime) -> None:
        """Ask again after as long as the payment's age (at least a minute, at most the cap)."""
        delay = min(BACKOFF_CAP, max(FIRST_CHECK, now - row.created_at))
        self.conn.zadd(SCHEDULE_KEY, {str(row.id): (now + delay).timestamp()})

    def finished(self, row: Payment, window: timedelta) -> None:
        """Never again inside its window (pruned once the window is over)."""
        self.conn.zadd(SCHEDULE_KEY, {str(row.id): (row.created_at + window).timestamp() + 1})

    def prune(self, before: datetime) -> None:
        self.conn.zremrangebyscore(SCHEDULE_KEY, "-inf", before.timestamp())


def open_payments(runtime: Runtime, providers: Sequence[str], now: datetime,
                  spans: dict[str, timedelta]) -> list[Payment]:
    """Open payments created at the provider and still inside its window, oldest first."""
    inside = or_(*(and_(Payment.provider == provider, Payment.created_at >= now - spans[provider])
                   for provider in providers))
    with Session(runtime.engine, expire_on_commit=False) as session:
        return list(session.execute(
            select(Payment).where(Payment.status.in_(billing.OPEN_STATUSES),
                                  Payment.provider_payment_id.is_not(None), inside)
            .order_by(Payment.created_at).limit(MAX_CANDIDATES)).scalars())


def run(runtime: Runtime, now: datetime | None = None, budget: float = BUDGET_SECONDS,
        clock: Callable[[], float] = time.monotonic) -> int:
    """One pass of the poller; returns how many payments the providers were asked about."""
    now = now or datetime.now(UTC)
    settings = runtime.settings
    providers = [p for p in service.PROVIDERS if service.configured(settings, p)]
    if not providers:
        return 0
    spans = windows(settings)
    schedule = Schedule(runtime.redis)
    schedule.prune(now - max(spans.values()) - BACKOFF_CAP)
    due = schedule.due(open_payments(runtime, providers, now, spans), now)
    due = due[:settings.payment_poll_batch]
    deadline = clock() + budget
    asked = _poll_cryptobot(runtime, [r for r in due if r.provider == "cryptobot"], schedule,
                            now, spans["cryptobot"])
    asked += _poll_yookassa(runtime, [r for r in due if r.provider == "yookassa"], schedule,
                            now, spans["yookassa"], lambda: clock() >= deadline)
    if due:
        log.info("open payments polled", extra={"due": len(due), "asked": asked})
    if "yookassa" in providers:
        _poll_refunds(runtime, now)
    return asked


def _poll_yookassa(runtime: Runtime, rows: list[Payment], schedule: Schedule, now: datetime,
                   window: timedelta, out_of_time: Callable[[], bool]) -> int:
    asked = 0
    for row in rows:
        if out_of_time():
            log.warning("payment poll out of time: the rest waits for the next run",
                        extra={"provider": "yookassa", "left": len(rows) - asked})
            break
        asked += 1
        try:
            settled = service.settle_from_provider(runtime, row)
        except ProviderError as exc:
            _provider_failed(runtime, "yookassa", row, exc)
            break
        except (MalformedAnswer, BillingError) as exc:
            _unreadable(runtime, "yookassa", row, schedule, now, exc)
            continue
        _apply(runtime, row, settled, schedule, now, window)
    return asked


def _poll_cryptobot(runtime: Runtime, rows: list[Payment], schedule: Schedule, now: datetime,
                    window: timedelta) -> int:
    by_invoice = {int(r.provider_payment_id): r for r in rows
                  if r.provider_payment_id and r.provider_payment_id.isdigit()}
    if not by_invoice:
        return 0
    try:
        found = service.cryptobot_client(runtime.settings).get_invoices(list(by_invoice))
    except ProviderError as exc:
        _provider_failed(runtime, "cryptobot", next(iter(by_invoice.values())), exc)
        return len(by_invoice)
    except MalformedInvoice as exc:
        for row in by_invoice.values():
            _unreadable(runtime, "cryptobot", row, schedule, now, exc)
        return len(by_invoice)
    for invoice_id, row in by_invoice.items():
        invoice = found.get(invoice_id)
        if invoice is None:
            settled = service.Settlement("unknown", row.id, detail="Crypto Pay does not know it")
        else:
            settled = service.settle_cryptobot(runtime, invoice, expected_payment_id=row.id)
        _apply(runtime, row, settled, schedule, now, window)
    return len(by_invoice)


def _poll_refunds(runtime: Runtime, now: datetime) -> int:
    """Apply YooKassa refunds whose notification never came; returns how many were applied."""
    last = runtime.redis.get(REFUNDS_KEY)
    if last is not None and now.timestamp() - float(last) < REFUNDS_EVERY.total_seconds():
        return 0
    since = now - REFUNDS_WINDOW
    try:
        listed = service.yookassa_client(runtime.settings).list_refunds(
            created_gte=since.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    except (ProviderError, MalformedAnswer) as exc:
        _count(runtime, "yookassa", "refunds_unavailable")
        log.warning("payment poll: refunds not listed, retried next run", extra={
            "provider": "yookassa", "error": str(exc)})
        return 0
    runtime.redis.set(REFUNDS_KEY, str(now.timestamp()))
    fresh = [r for r in listed if r.status == "succeeded"
             and (service.instant(r.raw.get("created_at")) or now) >= since]
    if not fresh:
        return 0
    # Only refunds of payments we have and have not recorded: one of another integration of
    # the shop, or of a row a restore lost, is reconcile's business (no alert every run).
    with Session(runtime.engine) as session:
        known = set(session.execute(select(PaymentRefund.provider_refund_id).where(
            PaymentRefund.provider == "yookassa",
            PaymentRefund.provider_refund_id.in_([r.id for r in fresh]))).scalars())
        ours = set(session.execute(select(Payment.provider_payment_id).where(
            Payment.provider == "yookassa",
            Payment.provider_payment_id.in_({r.payment_id for r in fresh}))).scalars())
    applied = 0
    for refund in fresh:
        if refund.id in known or refund.payment_id not in ours:
            continue
        try:
            handled = notifications.apply_yookassa_refund(runtime, refund)
        except (ProviderError, MalformedAnswer) as exc:
            log.warning("payment poll: refund not applied, retried next run", extra={
                "provider": "yookassa", "refund": refund.id, "error": str(exc)})
            runtime.redis.delete(REFUNDS_KEY)
            break
        _count(runtime, "yookassa", "refund_applied" if handled.outcome == "refunded"
               else f"refund_{handled.outcome}")
        if handled.outcome == "refunded" and handled.refund_id is not None:
            applied += 1
            log.info("Refund applied by the poller (its notification never came)", extra={
                "payment_id": handled.payment_id, "refund": refund.id})
            notify.enqueue_refund_notice(runtime, handled.refund_id)
    return applied


def _apply(runtime: Runtime, row: Payment, settled: service.Settlement, schedule: Schedule,
           now: datetime, window: timedelta) -> None:
    _count(runtime, row.provider, settled.outcome)
    if settled.credited:
        log.info("Payment credited by the poller (its webhook never came)", extra={
            "payment_id": row.id, "provider": row.provider})
        notify.enqueue_completion_notice(runtime, row.id)
    elif settled.outcome != "pending":
        log.info("open payment settled by the poller", extra={
            "payment_id": row.id, "provider": row.provider, "outcome": settled.outcome,
            "detail": settled.detail})
    if settled.outcome in FINISHED:
        schedule.finished(row, window)
    else:
        schedule.later(row, now)


def _provider_failed(runtime: Runtime, provider: str, row: Payment,
                     exc: ProviderError) -> None:
    """Nothing is marked: the payments stay due and the next run asks again."""
    _count(runtime, provider, "unavailable")
    log.warning("payment poll: provider did not answer, retried next run", extra={
        "provider": provider, "payment_id": row.id, "error": str(exc)})


def _unreadable(runtime: Runtime, provider: str, row: Payment, schedule: Schedule,
                now: datetime, exc: Exception) -> None:
    _count(runtime, provider, "error")
    log.error("payment poll: unreadable answer", extra={
        "provider": provider, "payment_id": row.id, "error": str(exc)})
    schedule.later(row, now)


def _count(runtime: Runtime, provider: str, outcome: str) -> None:
    metrics.incr(runtime.redis, "habitbot_payment_polls_total", provider=provider,
                 outcome=outcome)
