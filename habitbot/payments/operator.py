"""The operator's payment tools: complete by hand, reconcile with the providers, refund, show.

Everything goes through the same paths as the webhooks: the provider is asked first and its
answer applied by `service.settle_*` (credit exactly once); only `force` credits a payment the
provider does not confirm, and then the operator's reason is stored with the credit. Nothing
here prints: results are returned for `habitbot.cli_payments` to render.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from habitbot.models import BalanceTransaction, Payment, Subscription, User
from habitbot.payments import notify, service, stars
from habitbot.payments.cryptobot import Invoice, MalformedInvoice
from habitbot.payments.http import ProviderError, ProviderRefused
from habitbot.payments.origin import Origin
from habitbot.payments.yookassa import (
    MalformedAnswer,
    YooKassaPayment,
    YooKassaRefund,
    derived_key,
)
from habitbot.services import billing
from habitbot.services.billing import BillingError
from habitbot.telegram.errors import TelegramError

if TYPE_CHECKING:
    from habitbot.runtime import Runtime

log = logging.getLogger(__name__)

PROVIDERS = ("yookassa", "cryptobot", "stars")


class OperatorError(Exception):
    """A refusal the operator can act on; the message says what to do."""


# ---------------------------------------------------------------- finding the payment

def locate(runtime: Runtime, provider: str, provider_id: str | None = None,
           payment_id: int | None = None, charges: stars.Charges | None = None) -> Payment:
    """Our payment by our id or by the provider's id (asking the provider for our id in its
    metadata or payload when our row lost the provider's id; `charges`: Telegram's Stars
    transactions when the caller has them)."""
    if provider not in PROVIDERS:
        raise OperatorError(f"unknown provider {provider!r}: one of {', '.join(PROVIDERS)}")
    if payment_id is not None:
        row = billing.get_payment(runtime.engine, payment_id)
        if row is None:
            raise OperatorError(f"no payment {payment_id}")
        if row.provider != provider:
            raise OperatorError(f"payment {payment_id} is a {row.provider} payment, "
                                f"not {provider}")
        return row
    if not provider_id:
        raise OperatorError("give --id (the provider's payment id) or --payment (ours)")
    row = billing.find_payment(runtime.engine, provider, provider_id)
    if row is None:
        row = _row_from_provider(runtime, provider, provider_id, charges)
        if row is None or row.provider != provider:
            raise OperatorError(f"no {provider} payment {provider_id!r} in our database")
    return row


def _row_from_provider(runtime: Runtime, provider: str, provider_id: str,
                       charges: stars.Charges | None = None) -> Payment | None:
    """Our row named by the provider's record (metadata, payload). A paid payment our
    database lost — restored from an older backup — is re-created from that record, so it
    can be credited through the same exactly-once path."""
    try:
        if provider == "yookassa":
            payment = service.yookassa_client(runtime.settings).get_payment(provider_id)
            row = service.find_row(runtime, provider, payment.origin, payment.id)
            if row is None and payment.status in ("succeeded", "waiting_for_capture"):
                row = service.restore_row(runtime, provider, payment.origin, payment.id,
                                          payment.amount_minor, payment.currency, payment.raw)
            return row
        if provider == "stars":
            charge = stars.find_charge(runtime, provider_id, charges)
            if charge is None:
                return None
            origin = stars.parse_origin(charge.payload, charge.telegram_id)
            row = service.find_row(runtime, provider, origin, provider_id)
            if row is None and not charge.refunded:
                row = service.restore_row(runtime, provider, origin, provider_id,
                                          charge.amount, stars.CURRENCY, {})
            return row
        if provider == "cryptobot" and provider_id.isdigit():
            found = service.cryptobot_client(runtime.settings).get_invoices([int(provider_id)])
            invoice = found.get(int(provider_id))
            if invoice is None:
                return None
            row = service.find_row(runtime, provider, invoice.origin, provider_id)
            if row is None and invoice.status == "paid" and invoice.currency_type == "fiat":
                row = service.restore_row(runtime, provider, invoice.origin, provider_id,
                                          invoice.amount_minor, invoice.currency, invoice.raw)
            return row
    except ProviderRefused:
        return None
    except TelegramError as exc:
        raise OperatorError(f"Telegram did not answer: {exc}") from None
    except (ProviderError, MalformedAnswer, MalformedInvoice) as exc:
        raise OperatorError(f"{provider} did not answer: {exc}") from None
    except BillingError as exc:
        raise OperatorError(f"{provider} is not configured here ({exc.code})") from None
    return None


# ---------------------------------------------------------------- complete

@dataclass(frozen=True)
class CompleteResult:
    payment_id: int
    action: str  # credited | forced | already | refused
    message: str


def complete(runtime: Runtime, provider: str, *, provider_id: str | None = None,
             payment_id: int | None = None, force: bool = False,
             reason: str | None = None) -> CompleteResult:
    """Confirm with the provider, then credit through the exactly-once path. Without a
    provider confirmation only `force` with a `reason` credits (and records the reason)."""
    if force and not (reason and reason.strip()):
        raise OperatorError("--force needs --reason: say why the payment is credited")
    # Telegram's Stars transactions are paged once for the whole command.
    charges = stars.Charges(runtime) if provider == "stars" else None
    row = locate(runtime, provider, provider_id, payment_id, charges)
    if row.status == "succeeded" or row.status == "refunded":
        return CompleteResult(row.id, "already", f"payment {row.id} is already {row.status}; "
                              "nothing to do")
    if row.status not in billing.OPEN_STATUSES:
        raise OperatorError(f"payment {row.id} is {row.status}: it cannot be completed (the "
                            "user should pay again)")
    said = _ask_provider(runtime, row, provider_id, charges)
    if said.credited:
        notify.enqueue_completion_notice(runtime, row.id)
        return CompleteResult(row.id, "credited",
                              f"{provider} confirms payment {row.id}: credited ({_what(row)})")
    if said.outcome == "already_final":
        current = billing.get_payment(runtime.engine, row.id)
        return CompleteResult(row.id, "already",
                              f"payment {row.id} is already "
                              f"{current.status if current else 'gone'}; nothing to do")
    if not force:
        return CompleteResult(row.id, "refused",
                              f"{provider} does not confirm payment {row.id} "
                              f"({said.outcome}: {said.detail or 'not paid'}); nothing credited. "
                              "If you are sure it was paid, rerun with --force --reason \"...\"")
    assert reason is not None
    try:
        completion = billing.complete_payment(
            runtime.engine, row.id, row.amount_minor, row.currency,
            provider_id if provider_id and not row.provider_payment_id else None,
            operator_reason=reason.strip())
    except BillingError as exc:
        raise OperatorError(f"payment {row.id} could not be credited: {exc.code}") from None
    if not completion.credited:
        return CompleteResult(row.id, "already", f"payment {row.id} is already "
                              f"{completion.status}; nothing to do")
    runtime.alerts.raise_alert(
        "WARNING", f"payments {provider}",
        f"payment {row.id} credited by an operator without the provider's confirmation: "
        f"{reason.strip()}", fingerprint=f"payment_forced:{row.id}")
    notify.enqueue_completion_notice(runtime, row.id)
    return CompleteResult(row.id, "forced", f"payment {row.id} credited by force "
                          f"({_what(row)}); reason recorded: {reason.strip()}")


def _what(row: Payment) -> str:
    amount = notify.format_money(row.amount_minor, row.currency)
    return f"top-up {amount}" if row.payment_type == "balance_topup" else \
        f"premium {row.plan}, {amount}"


def _ask_provider(runtime: Runtime, row: Payment, provider_id: str | None,
                  charges: stars.Charges | None = None) -> service.Settlement:
    if row.provider == "stars":
        return _ask_telegram(runtime, row, provider_id, charges or stars.Charges(runtime))
    try:
        return service.settle_from_provider(runtime, row, provider_id)
    except (ProviderError, MalformedAnswer, MalformedInvoice) as exc:
        return service.Settlement("unavailable", row.id, detail=str(exc))
    except BillingError as exc:
        return service.Settlement("unavailable", row.id, detail=exc.code)


def _ask_telegram(runtime: Runtime, row: Payment, charge_id: str | None,
                  charges: stars.Charges) -> service.Settlement:
    """A Stars payment whose `successful_payment` we could not record: Telegram confirms the
    charge (`getStarTransactions`), then the bot's own exactly-once path credits it."""
    charge_id = charge_id or row.provider_payment_id
    if not charge_id:
        return service.Settlement("pending", row.id, detail="give the charge id with --id "
                                  "(telegram_payment_charge_id, from the alert or the log)")
    try:
        charge = stars.find_charge(runtime, charge_id, charges)
        origin = stars.parse_origin(charge.payload) if charge else None
        if charge is None or origin is None or not (
                origin.key == row.idempotence_key if origin.key is not None
                else origin.payment_id == row.id):
            return service.Settlement("pending", row.id, detail=f"Telegram has no charge "
                                      f"{charge_id} for payment {row.id}")
        settled = stars.complete_charge(runtime, charge_id, charges)
    except stars.StarsError as exc:
        return service.Settlement("pending", row.id, detail=exc.detail or exc.code)
    except TelegramError as exc:
        return service.Settlement("unavailable", row.id, detail=str(exc))
    return _from_stars(settled, row.id)


def _from_stars(settled: stars.Settlement, payment_id: int | None) -> service.Settlement:
    """The bot's Stars outcome in the terms of the other providers' settlements: anything
    but a credit or a duplicate (a charge refunded instead) credited nothing."""
    outcome = {"credited": "credited", "duplicate": "already_final"}.get(settled.outcome,
                                                                       "mismatch")
    detail = settled.reason or ("" if outcome != "mismatch" else settled.outcome)
    return service.Settlement(outcome, settled.payment_id or payment_id, settled.completion,
                              detail)


# ---------------------------------------------------------------- reconcile

@dataclass
class Difference:
    provider: str
    provider_id: str | None
    payment_id: int | None
    ours: str
    theirs: str
    note: str
    fixable: bool = False
    fixed: str | None = None


@dataclass
class ReconcileReport:
    checked: int = 0
    provider_errors: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)


Progress = Callable[[int, int], None]


def _rows_since(engine: Engine, since: datetime) -> list[Payment]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.execute(select(Payment).where(
            Payment.provider.in_(service.PROVIDERS), Payment.created_at >= since,
            Payment.status.in_(("pending", "waiting_for_capture", "succeeded")))
            .order_by(Payment.id)).scalars())


def reconcile(runtime: Runtime, since: datetime, fix: bool = False,
              progress: Progress | None = None) -> ReconcileReport:
    """Compare our pending and succeeded payments since `since` with what the providers say,
    and the providers' paid payments with ours. With `fix`, open payments the provider
    settled are settled here (credited once, or closed); differences that would take money
    back (credited here, not paid there) are only reported."""
    report = ReconcileReport()
    rows = _rows_since(runtime.engine, since)
    total = len(rows)
    # What the providers say, read once for the whole run (a listing, batched getInvoices),
    # not once per payment.
    invoices = _invoices(runtime, [r for r in rows if r.provider == "cryptobot"], report)
    kassa = _kassa_payments(runtime, since, report)
    refunds = _KassaRefunds(runtime, since)
    for done, row in enumerate(rows, 1):
        report.checked += 1
        try:
            difference = _compare(runtime, row, invoices, kassa)
        except (ProviderError, MalformedAnswer, MalformedInvoice, BillingError) as exc:
            report.provider_errors.append(f"payment {row.id}: {exc}")
            difference = None
        if difference is not None:
            if fix and difference.fixable:
                difference.fixed = _fix(runtime, row, invoices, kassa, refunds)
            report.differences.append(difference)
        if progress is not None:
            progress(done, total)
    known = {(r.provider, r.provider_payment_id) for r in rows}
    report.differences.extend(_paid_elsewhere(runtime, since, known, report, kassa, fix))
    return report


def _kassa_payments(runtime: Runtime, since: datetime,
                    report: ReconcileReport) -> dict[str, YooKassaPayment] | None:
    """YooKassa's payments created since `since`, by id (one listing, every page); None when
    YooKassa is not configured or the listing failed (then each payment is asked alone)."""
    if not service.configured(runtime.settings, "yookassa"):
        return None
    try:
        listed = service.yookassa_client(runtime.settings).list_payments(
            created_gte=since.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    except (ProviderError, MalformedAnswer) as exc:
        report.provider_errors.append(f"yookassa list payments: {exc}")
        return None
    return {p.id: p for p in listed if _created_since(p, since)}


def _invoices(runtime: Runtime, rows: list[Payment],
              report: ReconcileReport) -> dict[int, Invoice]:
    ids = [int(r.provider_payment_id) for r in rows
           if r.provider_payment_id and r.provider_payment_id.isdigit()]
    if not ids or not service.configured(runtime.settings, "cryptobot"):
        return {}
    try:
        return service.cryptobot_client(runtime.settings).get_invoices(ids)
    except (ProviderError, MalformedInvoice) as exc:
        report.provider_errors.append(f"cryptobot getInvoices: {exc}")
        return {}


def _kassa_payment(runtime: Runtime, row: Payment,
                   kassa: dict[str, YooKassaPayment] | None) -> YooKassaPayment | None:
    """The row's YooKassa payment from the run's listing, else asked alone (and kept);
    None when YooKassa does not know it."""
    assert row.provider_payment_id is not None
    if kassa is not None and row.provider_payment_id in kassa:
        return kassa[row.provider_payment_id]
    try:
        payment = service.yookassa_client(runtime.settings).get_payment(row.provider_payment_id)
    except ProviderRefused as exc:
        if exc.not_found:
            return None
        raise
    if kassa is not None:
        kassa[payment.id] = payment
    return payment


def _their_status(runtime: Runtime, row: Payment, invoices: dict[int, Invoice],
                  kassa: dict[str, YooKassaPayment] | None) -> tuple[str, int | None]:
    """(status at the provider, refunded minor units at the provider when known)."""
    assert row.provider_payment_id is not None
    if row.provider == "yookassa":
        payment = _kassa_payment(runtime, row, kassa)
        if payment is None:
            return "missing", None
        return payment.status, payment.refunded_minor
    invoice = invoices.get(int(row.provider_payment_id)) \
        if row.provider_payment_id.isdigit() else None
    if invoice is None:
        return "missing", None
    return {"paid": "succeeded", "expired": "canceled"}.get(invoice.status, "pending"), None


def _compare(runtime: Runtime, row: Payment, invoices: dict[int, Invoice],
             kassa: dict[str, YooKassaPayment] | None) -> Difference | None:
    if not service.configured(runtime.settings, row.provider):
        raise BillingError(f"{row.provider} is not configured")
    if not row.provider_payment_id:
        if row.status == "succeeded":
            return None
        return Difference(row.provider, None, row.id, row.status, "never created",
                          "the provider never answered the creation; the user saw no link")
    theirs, refunded = _their_status(runtime, row, invoices, kassa)
    ours = row.status
    if ours in billing.OPEN_STATUSES:
        if theirs in ("pending",):
            return None
        if theirs in ("succeeded", "waiting_for_capture"):
            return Difference(row.provider, row.provider_payment_id, row.id, ours, theirs,
                              "paid at the provider, not credited here", fixable=True)
        if theirs == "canceled":
            return Difference(row.provider, row.provider_payment_id, row.id, ours, theirs,
                              "closed at the provider, still open here", fixable=True)
        return Difference(row.provider, row.provider_payment_id, row.id, ours, theirs,
                          "the provider does not know this payment")
    if theirs != "succeeded":
        return Difference(row.provider, row.provider_payment_id, row.id, ours, theirs,
                          "CREDITED HERE BUT NOT PAID AT THE PROVIDER: check it by hand")
    if refunded is not None and refunded > row.refunded_minor:
        return Difference(row.provider, row.provider_payment_id, row.id, ours,
                          f"{theirs}, refunded {refunded}",
                          f"refunds at the provider ({refunded}) not applied here "
                          f"({row.refunded_minor})", fixable=True)
    return None


class _KassaRefunds:
    """YooKassa's refunds created since the window began, listed once (every page) when the
    first payment needs them, by YooKassa payment id: a refund is never older than its
    payment, so this holds every refund of the payments in the window."""

    def __init__(self, runtime: Runtime, since: datetime) -> None:
        self._runtime = runtime
        self._since = since
        self._by_payment: dict[str, list[YooKassaRefund]] | None = None

    def of(self, provider_payment_id: str) -> list[YooKassaRefund]:
        if self._by_payment is None:
            listed = service.yookassa_client(self._runtime.settings).list_refunds(
                created_gte=self._since.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
            self._by_payment = {}
            for refund in listed:
                self._by_payment.setdefault(refund.payment_id, []).append(refund)
        return self._by_payment.get(provider_payment_id, [])


def _fix(runtime: Runtime, row: Payment, invoices: dict[int, Invoice],
         kassa: dict[str, YooKassaPayment] | None, refunds: _KassaRefunds) -> str:
    try:
        if row.status in billing.OPEN_STATUSES:
            known = kassa.get(row.provider_payment_id or "") if kassa is not None else None
            if row.provider == "cryptobot" and row.provider_payment_id:
                invoice = invoices[int(row.provider_payment_id)]
                settled = service.settle_cryptobot(runtime, invoice, expected_payment_id=row.id)
            elif known is not None:
                settled = service.settle_yookassa(runtime, known, expected_payment_id=row.id)
            else:
                settled = service.settle_from_provider(runtime, row)
            if settled.credited:
                notify.enqueue_completion_notice(runtime, row.id)
            return settled.outcome
        return _apply_missing_refunds(runtime, row, refunds)
    except (ProviderError, MalformedAnswer, MalformedInvoice, BillingError, KeyError) as exc:
        return f"not fixed: {exc}"


def _apply_missing_refunds(runtime: Runtime, row: Payment, refunds: _KassaRefunds) -> str:
    from habitbot.payments.notifications import apply_provider_refund

    assert row.provider_payment_id is not None
    applied = 0
    for refund in refunds.of(row.provider_payment_id):
        if refund.status != "succeeded":
            continue
        handled = apply_provider_refund(runtime, row.id, "yookassa", row.provider_payment_id,
                                        refund.id, refund.amount_minor, refund.currency)
        if handled.outcome == "refunded":
            applied += 1
            if handled.refund_id is not None:
                notify.enqueue_refund_notice(runtime, handled.refund_id)
    return f"{applied} refund(s) applied"


def _paid_elsewhere(runtime: Runtime, since: datetime, known: set[tuple[str, str | None]],
                    report: ReconcileReport, kassa: dict[str, YooKassaPayment] | None,
                    fix: bool = False) -> list[Difference]:
    """Payments the providers say are paid that we have no succeeded row for (after a
    database restore, or a row lost some other way). With `fix`, a payment whose record
    says whose it is and what for is re-created here and credited once; one that does not
    is only reported (an operator decides)."""
    found: list[Difference | None] = []
    settings = runtime.settings
    if kassa is not None:  # the run's listing (a failed one is already reported)
        found.extend(_unknown_paid(runtime, "yookassa", p.id, p.origin, known,
                                   partial(service.settle_yookassa, runtime, p)
                                   if fix else None)
                     for p in list(kassa.values()) if p.status == "succeeded")
    if service.configured(settings, "cryptobot"):
        try:
            # An invoice created before this cannot have been paid inside the window.
            created_after = since - timedelta(seconds=settings.cryptobot_invoice_expires_in,
                                              days=1)
            invoices = service.cryptobot_client(settings).paid_invoices(created_after)
        except (ProviderError, MalformedInvoice) as exc:
            report.provider_errors.append(f"cryptobot paid invoices: {exc}")
            invoices = []
        found.extend(_unknown_paid(runtime, "cryptobot", str(i.invoice_id), i.origin, known,
                                   partial(service.settle_cryptobot, runtime, i)
                                   if fix else None)
                     for i in invoices if _paid_since(i, since))
    # Read once: every charge below is settled from this one reading.
    ledger = stars.Charges(runtime)
    try:
        charges = stars.charges_since(runtime, int(since.timestamp()), ledger)
    except TelegramError as exc:
        report.provider_errors.append(f"stars getStarTransactions: {exc}")
        charges = []
    found.extend(_unknown_paid(runtime, "stars", c.charge_id,
                               stars.parse_origin(c.payload, c.telegram_id), known,
                               partial(_settle_charge, runtime, c.charge_id, ledger)
                               if fix else None)
                 for c in charges if not c.refunded)
    return [d for d in found if d is not None]


def _settle_charge(runtime: Runtime, charge_id: str,
                   charges: stars.Charges) -> service.Settlement:
    """A Stars charge not credited here, through the bot's own exactly-once path."""
    try:
        settled = stars.complete_charge(runtime, charge_id, charges)
    except stars.StarsError as exc:
        return service.Settlement("mismatch", detail=exc.detail or exc.code)
    return _from_stars(settled, None)


def _created_since(payment: YooKassaPayment, since: datetime) -> bool:
    created = service.instant(payment.raw.get("created_at"))
    return created is None or created >= since


def _paid_since(invoice: Invoice, since: datetime) -> bool:
    paid = service.instant(invoice.raw.get("paid_at") or invoice.raw.get("created_at"))
    return paid is None or paid >= since


def _unknown_paid(runtime: Runtime, provider: str, provider_id: str, origin: Origin,
                  known: set[tuple[str, str | None]],
                  settle: Callable[[], service.Settlement] | None) -> Difference | None:
    if (provider, provider_id) in known:
        return None
    row = service.find_row(runtime, provider, origin, provider_id)
    if row is not None and (row.provider != provider
                            or row.provider_payment_id not in (None, provider_id)):
        row = None
    if row is not None and row.status in ("succeeded", "refunded"):
        return None
    ours = row.status if row is not None else "no row"
    if row is None and origin.restorable:
        # Not "payment N": after a restore, our id N may already name another payment.
        difference = Difference(provider, provider_id, None, ours, "succeeded",
                                f"paid at the provider, missing here (a restore from an "
                                f"older backup?; it was our payment {origin.payment_id}): "
                                "--fix re-creates it from the provider's record and credits "
                                "it", fixable=True)
    else:
        difference = Difference(provider, provider_id, row.id if row else origin.payment_id,
                                ours, "succeeded", "paid at the provider, unknown or not "
                                "credited here: check it, then `habitbot payments complete`",
                                fixable=row is not None)
    if settle is not None and difference.fixable:
        difference.fixed = _settle_elsewhere(runtime, settle)
    return difference


def _settle_elsewhere(runtime: Runtime, settle: Callable[[], service.Settlement]) -> str:
    try:
        settled = settle()
    except (ProviderError, MalformedAnswer, MalformedInvoice, BillingError) as exc:
        return f"not fixed: {exc}"
    if settled.credited and settled.payment_id is not None:
        notify.enqueue_completion_notice(runtime, settled.payment_id)
    return settled.outcome if settled.outcome in ("credited", "already_final") \
        else f"not fixed: {settled.outcome} {settled.detail}".strip()


# ---------------------------------------------------------------- refund

@dataclass(frozen=True)
class RefundResult:
    payment_id: int
    message: str
    outcome: billing.RefundOutcome | None = None


def refund(runtime: Runtime, provider: str, *, provider_id: str | None = None,
           payment_id: int | None = None, amount_minor: int | None = None,
           reason: str | None = None) -> RefundResult:
    """Refund at the provider, then apply it here exactly once (debit or shorten premium)."""
    row = locate(runtime, provider, provider_id, payment_id)
    if row.status not in ("succeeded", "refunded"):
        raise OperatorError(f"payment {row.id} is {row.status}: only paid payments can be "
                            "refunded")
    left = row.amount_minor - row.refunded_minor
    if left <= 0:
        raise OperatorError(f"payment {row.id} is already refunded in full")
    amount = left if amount_minor is None else amount_minor
    if not 0 < amount <= left:
        raise OperatorError(f"the amount must be within 1..{left} minor units "
                            f"({notify.format_money(left, row.currency)} can be refunded)")
    if provider == "stars":
        if amount != row.amount_minor:
            raise OperatorError("Telegram Stars are refunded in full only")
        try:
            outcome = stars.refund_stars(runtime, row.id, reason)
        except stars.StarsError as exc:
            raise OperatorError(f"Stars refund refused: {exc}") from None
        return _refunded(runtime, row, outcome)
    if provider == "cryptobot":
        raise OperatorError("Crypto Pay has no refund API: send the coins back from the "
                            "@CryptoBot app by hand; the balance is not changed here")
    return _refund_yookassa(runtime, row, amount, reason)


def _refund_yookassa(runtime: Runtime, row: Payment, amount: int,
                     reason: str | None) -> RefundResult:
    from habitbot.payments.notifications import apply_provider_refund

    assert row.provider_payment_id is not None
    # Stable for this refund: rerunning after a lost answer replays it instead of refunding
    # again; the next refund of the same payment has a new refunded total, hence a new key.
    key = derived_key(row.idempotence_key, f"refund:{row.refunded_minor}:{amount}")
    try:
        made = service.yookassa_client(runtime.settings).create_refund(
            row.provider_payment_id, amount, row.currency, key, reason)
    except ProviderRefused as exc:
        raise OperatorError(f"YooKassa refused the refund: {exc}") from None
    except (ProviderError, MalformedAnswer) as exc:
        raise OperatorError(f"YooKassa did not answer ({exc}); run the same command again: "
                            "it cannot refund twice") from None
    if made.status != "succeeded":
        return RefundResult(row.id, f"refund {made.id} is {made.status} at YooKassa; it is "
                            "applied here when YooKassa reports it succeeded")
    handled = apply_provider_refund(runtime, row.id, "yookassa", row.provider_payment_id,
                                    made.id, made.amount_minor, made.currency, reason)
    if handled.outcome not in ("refunded", "already_final"):
        raise OperatorError(f"refunded at YooKassa ({made.id}) but not applied here: "
                            f"{handled.detail}")
    if handled.outcome == "refunded" and handled.refund_id is not None:
        notify.enqueue_refund_notice(runtime, handled.refund_id)
    return RefundResult(row.id, _refund_message(row, made.id, handled.refund,
                                                _access(runtime, row)), handled.refund)


def _refunded(runtime: Runtime, row: Payment, outcome: billing.RefundOutcome) -> RefundResult:
    if outcome.applied:
        notify.enqueue_refund_notice(runtime, outcome.refund_id)
    charge = row.provider_payment_id
    return RefundResult(row.id, _refund_message(row, charge or "", outcome,
                                                _access(runtime, row)), outcome)


def _access(runtime: Runtime, row: Payment) -> billing.PremiumStatus | None:
    """What the payer has after a refund of premium: a trial may go on past the paid days."""
    if row.payment_type == "balance_topup":
        return None
    return billing.status(runtime.engine, row.user_id)


def _refund_message(row: Payment, provider_refund_id: str,
                    outcome: billing.RefundOutcome | None,
                    access: billing.PremiumStatus | None = None) -> str:
    if outcome is None:
        return f"payment {row.id}: refund {provider_refund_id} recorded"
    amount = notify.format_money(outcome.amount_minor, row.currency)
    text = f"payment {row.id}: refunded {amount} (provider refund {provider_refund_id})"
    if not outcome.applied:
        text += "; it had already been applied here, nothing changed"
    elif row.payment_type == "balance_topup":
        text += f"; {notify.format_money(outcome.debited_minor, row.currency)} taken from the " \
                "balance"
        if outcome.shortfall_minor:
            text += (f"; {notify.format_money(outcome.shortfall_minor, row.currency)} was "
                     "already spent and could not be taken back")
    elif outcome.premium_until is not None:
        text += f"; premium now ends {outcome.premium_until:%Y-%m-%d %H:%M} UTC"
    if outcome.applied and access is not None and access.tier == "trial" and access.ends_at:
        text += f"; the trial goes on until {access.ends_at:%Y-%m-%d %H:%M} UTC"
    return text


# ---------------------------------------------------------------- show

def show(runtime: Runtime, payment_id: int) -> list[str]:
    """Everything about one payment, for the operator."""
    engine = runtime.engine
    with Session(engine) as session:
        row = session.get(Payment, payment_id)
        if row is None:
            raise OperatorError(f"no payment {payment_id}")
        user = session.get(User, row.user_id)
        txs = list(session.execute(select(BalanceTransaction).where(
            BalanceTransaction.payment_id == payment_id).order_by(BalanceTransaction.id))
            .scalars())
        subscription = session.execute(select(Subscription).where(
            Subscription.payment_id == payment_id)).scalars().first()
        lines = [
            f"payment {row.id}: {row.provider} {row.payment_type}"
            + (f" ({row.plan})" if row.plan else ""),
            f"  status          {row.status}",
            f"  amount          {notify.format_money(row.amount_minor, row.currency)}"
            f" ({row.amount_minor} {row.currency} minor units)",
            f"  refunded        {notify.format_money(row.refunded_minor, row.currency)}",
            f"  user            {row.user_id} (Telegram {user.telegram_id if user else '?'})",
            f"  provider id     {row.provider_payment_id or '-'}",
            f"  our key         {row.idempotence_key}",
            f"  created         {row.created_at:%Y-%m-%d %H:%M:%S} UTC",
            f"  completed       {_when(row.completed_at)}",
            f"  canceled        {_when(row.canceled_at)}",
        ]
        if row.failure_reason:
            lines.append(f"  reason          {row.failure_reason}")
        forced = (row.provider_data or {}).get("operator_completion")
        if forced:
            lines.append(f"  forced by an operator at {forced.get('at')}: {forced.get('reason')}")
        for tx in txs:
            lines.append(f"  balance {tx.kind:<9} {tx.amount_minor:+} → {tx.balance_after_minor}"
                         f" {tx.currency} at {tx.created_at:%Y-%m-%d %H:%M:%S}")
        if subscription is not None:
            lines.append(f"  subscription    {subscription.plan} {subscription.status} "
                         f"{subscription.starts_at:%Y-%m-%d} → {subscription.ends_at:%Y-%m-%d}")
    for refund_row in billing.refunds_of(engine, payment_id):
        lines.append(f"  refund          {refund_row.provider_refund_id} "
                     f"{notify.format_money(refund_row.amount_minor, row.currency)} "
                     f"{refund_row.status} at {refund_row.created_at:%Y-%m-%d %H:%M:%S}"
                     + (f" ({refund_row.reason})" if refund_row.reason else ""))
    return lines


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "-"
