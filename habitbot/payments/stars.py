"""Telegram Stars: invoices in XTR, the pre-checkout check, crediting on `successful_payment`
and refunds through `refundStarPayment`.

The invoice payload carries our payment id, our idempotence key and the plan
(`stars:<id>:<key hex>:<plan>`; older invoices `stars:<id>`); everything else is checked
against our `payments` row, never taken from the payload: the payment must be a pending Stars
payment of the paying user, for exactly the amount and currency Telegram reports. The row is
found by the key (after a database restore our ids restart and may name another payment); a
paid charge whose row a restore lost is re-created from the payload and the charge. Crediting goes
through `billing.complete_payment`, keyed by `telegram_payment_charge_id`, so a redelivered
`successful_payment` credits nothing more; a second charge for a payment that is already paid
(two approved checkouts of one invoice) is refunded to the user at once.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from habitbot.models import Payment, User
from habitbot.payments import service
from habitbot.payments.origin import PLANS, Origin
from habitbot.runtime import Runtime
from habitbot.services import billing
from habitbot.telegram.errors import TelegramError

log = logging.getLogger(__name__)

CURRENCY = "XTR"
PROVIDER = "stars"
PAYLOAD_PREFIX = "stars:"
ALREADY_REFUNDED = "CHARGE_ALREADY_REFUNDED"
TRANSACTIONS_PAGE = 100


class StarsError(Exception):
    """A Stars payment we refuse or cannot handle; `code` says why."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Settlement:
    """What became of one `successful_payment` message.

    outcome: `credited` (first delivery), `duplicate` (the same charge again: nothing
    changed), `refunded` (a charge we could not credit, given back to the user).
    """

    outcome: str
    payment_id: int | None
    charge_id: str
    completion: billing.Completion | None = None
    reason: str | None = None


@dataclass(frozen=True)
class _Row:
    payment_id: int
    telegram_id: int
    provider: str
    status: str
    amount_minor: int
    refunded_minor: int
    currency: str
    payment_type: str
    charge_id: str | None


def invoice_payload(payment_id: int, key: uuid.UUID | None = None,
                    plan: str | None = None) -> str:
    """At most 64 bytes (Telegram allows 128)."""
    if key is None or plan is None:
        return f"{PAYLOAD_PREFIX}{payment_id}"
    return f"{PAYLOAD_PREFIX}{payment_id}:{key.hex}:{plan}"


def parse_origin(payload: str | None, telegram_id: int | None = None) -> Origin:
    """What an invoice payload says (with the payer Telegram reports); an empty Origin for
    anything we did not write."""
    if not payload or not payload.startswith(PAYLOAD_PREFIX):
        return Origin(None)
    parts = payload[len(PAYLOAD_PREFIX):].split(":")
    digits = parts[0]
    if not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        return Origin(None)
    if len(parts) == 1:
        return Origin(int(digits))
    if len(parts) != 3 or parts[2] not in PLANS:
        return Origin(None)
    try:
        key = uuid.UUID(hex=parts[1]) if len(parts[1]) == 32 else None
    except ValueError:
        key = None
    if key is None:
        return Origin(None)
    return Origin(int(digits), key, telegram_id, "subscription", parts[2])


def parse_payload(payload: str | None) -> int | None:
    """Our payment id from an invoice payload; None for anything we did not write."""
    return parse_origin(payload).payment_id


def _row(engine: Engine, payment_id: int | None = None,
         key: uuid.UUID | None = None) -> _Row | None:
    where = Payment.idempotence_key == key if key is not None else Payment.id == payment_id
    with Session(engine) as session:
        found = session.execute(
            select(Payment.id, User.telegram_id, Payment.provider, Payment.status,
                   Payment.amount_minor, Payment.refunded_minor, Payment.currency,
                   Payment.payment_type, Payment.provider_payment_id)
            .join(User, User.id == Payment.user_id).where(where)).first()
    return _Row(*found) if found else None


def _row_of(engine: Engine, origin: Origin) -> _Row | None:
    """The row a payload names: by our key when it carries one, else by our id."""
    if origin.payment_id is None:
        return None
    return _row(engine, origin.payment_id, origin.key)


# -- the invoice ---------------------------------------------------------------------------

def send_invoice(runtime: Runtime, user_id: int, chat_id: int, plan: str, *, title: str,
                 description: str, label: str) -> int:
    """A pending Stars payment for `plan` and its invoice in the chat; returns the payment
    id. Title (≤ 32 characters), description and price label come translated from the
    caller."""
    amount = billing.price(plan, CURRENCY)
    payment_id, key = billing.create_payment(runtime.engine, user_id, PROVIDER,
                                             "subscription", amount, CURRENCY, plan=plan,
                                             description=f"premium {plan} (Telegram Stars)")
    try:
        runtime.sender.call("sendInvoice", {
            "chat_id": chat_id, "title": title[:32], "description": description[:255],
            "payload": invoice_payload(payment_id, key, plan), "provider_token": "",
            "currency": CURRENCY, "prices": [{"label": label, "amount": amount}],
        })
    except TelegramError as exc:
        # No invoice, nothing to pay: the row must not stay pending.
        billing.fail_payment(runtime.engine, payment_id, f"sendInvoice: {exc.description}")
        raise
    log.info("Stars invoice sent", extra={"payment_id": payment_id, "plan": plan,
                                          "amount": amount})
    return payment_id


# -- pre-checkout ----------------------------------------------------------------------------

def check_checkout(engine: Engine, telegram_id: int, payload: str | None, currency: str,
                   total_amount: int) -> int:
    """Validate a pre_checkout_query against our row; returns the payment id or raises
    StarsError with `bad_payload`, `unknown_payment`, `already_paid`, `not_payable` or
    `amount_mismatch`. Reads only: nothing changes whatever the answer."""
    origin = parse_origin(payload)
    payment_id = origin.payment_id
    if payment_id is None:
        raise StarsError("bad_payload")
    row = _row_of(engine, origin)
    if row is None or row.provider != PROVIDER or row.telegram_id != telegram_id:
        raise StarsError("unknown_payment", str(payment_id))
    if row.status == "succeeded" or row.status == "refunded":
        raise StarsError("already_paid", str(payment_id))
    if row.status != "pending":
        raise StarsError("not_payable", row.status)
    if currency != CURRENCY or row.currency != CURRENCY or total_amount != row.amount_minor:
        raise StarsError("amount_mismatch", f"{total_amount} {currency}")
    return payment_id


# -- successful_payment ----------------------------------------------------------------------

def settle(runtime: Runtime, telegram_id: int, payload: str | None, currency: str,
           total_amount: int, charge_id: str) -> Settlement:
    """Credit a `successful_payment` exactly once. Telegram has already taken the Stars, so a
    payment we cannot credit is refunded (and alerted) rather than kept. Database errors
    propagate: the caller tells the user and the operator (the charge id is in the log)."""
    if not charge_id:
        raise StarsError("bad_charge", "empty telegram_payment_charge_id")
    origin = parse_origin(payload, telegram_id)
    payment_id = origin.payment_id
    row = _row_of(runtime.engine, origin)
    if row is None and origin.restorable and currency == CURRENCY:
        row = _restored(runtime, origin, charge_id, total_amount)
    if row is None or row.provider != PROVIDER or row.telegram_id != telegram_id:
        return _refund_uncreditable(runtime, telegram_id, payment_id, charge_id,
                                    "unknown_payment")
    try:
        completion = billing.complete_payment(runtime.engine, row.payment_id, total_amount,
                                              currency, provider_payment_id=charge_id,
                                              idempotence_key=origin.key)
    except billing.BillingError as exc:
        return _refund_uncreditable(runtime, telegram_id, row.payment_id, charge_id, exc.code)
    if completion.credited:
        return Settlement("credited", row.payment_id, charge_id, completion)
    stored = _row(runtime.engine, row.payment_id)
    if stored is not None and stored.charge_id == charge_id:
        log.info("Stars payment delivered again, nothing credited",
                 extra={"payment_id": row.payment_id})
        return Settlement("duplicate", row.payment_id, charge_id, completion)
    # Paid twice (two approved checkouts of one invoice): the payment is credited once and
    # this second charge goes back to the user.
    return _refund_uncreditable(runtime, telegram_id, row.payment_id, charge_id,
                                "already_paid")


def _restored(runtime: Runtime, origin: Origin, charge_id: str,
              total_amount: int) -> _Row | None:
    """A paid charge whose row a database restore lost: re-created from the payload."""
    restored = service.restore_row(runtime, PROVIDER, origin, charge_id, total_amount,
                                   CURRENCY, {})
    return _row(runtime.engine, key=origin.key) if restored is not None else None


def _refund_uncreditable(runtime: Runtime, telegram_id: int, payment_id: int | None,
                         charge_id: str, reason: str) -> Settlement:
    extra = {"payment_id": payment_id, "charge_id": charge_id, "reason": reason}
    try:
        _call_refund(runtime, telegram_id, charge_id)
    except TelegramError as exc:
        log.error("Stars charge could not be credited nor refunded",
                  extra={**extra, "code": exc.code, "description": exc.description})
        runtime.alerts.raise_alert(
            "CRITICAL", "payments stars",
            f"charge {charge_id} (payment {payment_id}) not credited ({reason}) and the refund "
            f"failed: {exc.description}; refund it by hand",
            fingerprint=f"stars:unrefunded:{charge_id}")
        raise StarsError("refund_failed", exc.description) from None
    log.warning("Stars charge not credited, refunded to the user", extra=extra)
    runtime.alerts.raise_alert(
        "WARNING", "payments stars",
        f"charge {charge_id} (payment {payment_id}) not credited ({reason}); refunded",
        fingerprint=f"stars:refunded:{charge_id}")
    return Settlement("refunded", payment_id, charge_id, reason=reason)


def _call_refund(runtime: Runtime, telegram_id: int, charge_id: str) -> None:
    """refundStarPayment; a charge Telegram says is already refunded counts as refunded (a
    retry after a lost answer must not fail)."""
    try:
        runtime.sender.call("refundStarPayment", {"user_id": telegram_id,
                                                  "telegram_payment_charge_id": charge_id})
    except TelegramError as exc:
        if ALREADY_REFUNDED not in exc.description:
            raise
        log.info("Stars charge was already refunded", extra={"charge_id": charge_id})


# -- asking Telegram ---------------------------------------------------------------------------

@dataclass(frozen=True)
class StarCharge:
    """One incoming Stars payment as Telegram records it."""

    charge_id: str
    telegram_id: int
    amount: int
    payload: str | None
    refunded: bool
    date: int = field(default=0, compare=False)  # unix time of the payment


def _fetch(runtime: Runtime) -> dict[str, StarCharge]:
    """Incoming user payments as Telegram records them (`getStarTransactions`, every page,
    chronological), by charge id, with their refunds folded in: the only source to trust when
    our own record of a `successful_payment` is missing."""
    found: dict[str, dict] = {}
    refunded: set[str] = set()
    offset = 0
    while True:
        page = runtime.sender.call("getStarTransactions",
                                   {"offset": offset, "limit": TRANSACTIONS_PAGE})
        transactions = page.get("transactions") or []
        for transaction in transactions:
            tx_id = transaction.get("id")
            if not isinstance(tx_id, str):
                continue
            if transaction.get("source"):
                found[tx_id] = transaction
            elif transaction.get("receiver"):
                refunded.add(tx_id)
        if len(transactions) < TRANSACTIONS_PAGE:
            break
        offset += TRANSACTIONS_PAGE
    charges = {}
    for tx_id, transaction in found.items():
        source = transaction["source"]
        if source.get("type") != "user":
            continue
        charges[tx_id] = StarCharge(tx_id, int(source["user"]["id"]),
                                    int(transaction["amount"]), source.get("invoice_payload"),
                                    tx_id in refunded, int(transaction.get("date") or 0))
    return charges


class Charges:
    """Telegram's record of the bot's incoming Stars payments, read once — every page of
    `getStarTransactions` — on first use and kept for one run of a command: a run that looks
    at many charges (reconcile --fix, complete) pages once, not once per charge."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._by_id: dict[str, StarCharge] | None = None

    def _index(self) -> dict[str, StarCharge]:
        if self._by_id is None:
            self._by_id = _fetch(self._runtime)
        return self._by_id

    def get(self, charge_id: str) -> StarCharge | None:
        return self._index().get(charge_id)

    def since(self, since: int) -> list[StarCharge]:
        """Charges paid at or after `since` (unix time), refunded ones included."""
        return [c for c in self._index().values() if c.date >= since]


def find_charge(runtime: Runtime, charge_id: str,
                charges: Charges | None = None) -> StarCharge | None:
    """What Telegram says about one charge (from `charges` when the caller has them)."""
    return (charges or Charges(runtime)).get(charge_id)


def charges_since(runtime: Runtime, since: int,
                  charges: Charges | None = None) -> list[StarCharge]:
    """Our invoices' charges paid at or after `since` (unix time), refunded ones included."""
    return [c for c in (charges or Charges(runtime)).since(since)
            if parse_origin(c.payload).payment_id is not None]


def complete_charge(runtime: Runtime, charge_id: str,
                    charges: Charges | None = None) -> Settlement:
    """Credit a charge the bot could not record (the database was down when the
    `successful_payment` arrived): Telegram confirms it first, then the same exactly-once
    path as the bot. StarsError `unknown_charge` or `charge_refunded` changes nothing."""
    charge = find_charge(runtime, charge_id, charges)
    if charge is None:
        raise StarsError("unknown_charge", f"Telegram has no incoming Stars payment {charge_id}")
    if charge.refunded:
        raise StarsError("charge_refunded", f"charge {charge_id} was refunded at Telegram")
    return settle(runtime, charge.telegram_id, charge.payload, CURRENCY, charge.amount,
                  charge_id)


# -- operator refunds --------------------------------------------------------------------------

def refund_stars(runtime: Runtime, payment_id: int,
                 reason: str | None = None) -> billing.RefundOutcome:
    """Refund a paid Stars payment in full: `refundStarPayment` at Telegram first, then
    `billing.apply_refund` keyed by the charge id, so running it again after any failure
    finishes the job and never refunds twice. Returns apply_refund's outcome; raises
    StarsError (`unknown_payment`, `not_stars`, `not_paid`, `refund_refused`)."""
    row = _row(runtime.engine, payment_id)
    if row is None:
        raise StarsError("unknown_payment", f"no payment {payment_id}")
    if row.provider != PROVIDER:
        raise StarsError("not_stars", f"payment {payment_id} was paid with {row.provider}")
    if row.charge_id is None or row.status not in ("succeeded", "refunded"):
        raise StarsError("not_paid", f"payment {payment_id} is {row.status}")
    try:
        _call_refund(runtime, row.telegram_id, row.charge_id)
    except TelegramError as exc:
        raise StarsError("refund_refused", f"Telegram: {exc.description}") from None
    outcome = billing.apply_refund(runtime.engine, payment_id,
                                   provider_refund_id=row.charge_id,
                                   amount_minor=row.amount_minor, reason=reason)
    log.info("Stars payment refunded", extra={"payment_id": payment_id})
    return outcome
