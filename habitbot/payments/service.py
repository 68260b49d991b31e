"""One payment flow for every provider: row → provider → user pays → verify → credit once.

`start_payment` writes a pending `payments` row with our own idempotence key, then creates the
payment (YooKassa) or invoice (Crypto Pay) with it; a provider that stays unavailable through
the retries leaves the row `failed` (the user can simply try again). `settle_yookassa` and
`settle_cryptobot` take what the provider says *now* (a re-read payment, a signed invoice) and
apply it to our row through `billing`: credit exactly once, capture or cancel an authorised
payment, close a canceled one. Webhooks, the "check payment" button, the operator's
`payments complete` and reconciliation all end in these two functions.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from habitbot.i18n import N_, Translator
from habitbot.models import Payment, User
from habitbot.payments import receipts, yookassa
from habitbot.payments.cryptobot import CryptoBotClient, Invoice, MalformedInvoice
from habitbot.payments.http import ProviderError, ProviderRefused, ProviderUnavailable
from habitbot.payments.origin import Origin
from habitbot.payments.yookassa import MalformedAnswer, YooKassaClient, YooKassaPayment
from habitbot.services import billing
from habitbot.services.billing import BillingError, Completion

if TYPE_CHECKING:
    from habitbot.config import Settings
    from habitbot.runtime import Runtime

log = logging.getLogger(__name__)

PROVIDERS = ("yookassa", "cryptobot")
CURRENCIES = {"yookassa": ("RUB", "USD"), "cryptobot": ("RUB", "USD", "EUR")}
# Top-ups: from 1.00 to 100 000.00 in the currency.
TOPUP_MIN_MINOR = 100
TOPUP_MAX_MINOR = 10_000_000
DESCRIPTIONS = {
    "month": N_("HabitBot premium for 1 month"),
    "year": N_("HabitBot premium for 1 year"),
    "balance_topup": N_("HabitBot balance top-up"),
}


@dataclass(frozen=True)
class StartedPayment:
    payment_id: int
    provider: str
    confirmation_url: str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class Settlement:
    """What applying the provider's word to our row did.

    outcome: `credited` (this call credited), `already_final` (a duplicate: nothing changed),
    `pending` (not paid yet), `canceled` (closed without credit), `mismatch` (amount,
    currency, shop or ids disagree with our row: nothing credited, operator alerted),
    `unknown` (not one of our payments: nothing changed, operator alerted).
    """

    outcome: str
    payment_id: int | None = None
    completion: Completion | None = None
    detail: str = ""

    @property
    def credited(self) -> bool:
        return self.outcome == "credited"


# ---------------------------------------------------------------- provider clients

_clients: dict[tuple[str, ...], object] = {}
_clients_lock = threading.Lock()


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def yookassa_client(settings: Settings) -> YooKassaClient:
    """The process's client for these settings; `provider_not_configured` without them."""
    shop_id, secret = settings.yookassa_shop_id, settings.yookassa_secret_key
    if not shop_id or not secret:
        raise BillingError("provider_not_configured", provider="yookassa")
    key = ("yookassa", settings.yookassa_api_url, shop_id, _fingerprint(secret))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = YooKassaClient(settings.yookassa_api_url, shop_id, secret)
    assert isinstance(client, YooKassaClient)
    return client


def cryptobot_client(settings: Settings) -> CryptoBotClient:
    token = settings.cryptobot_token
    if not token:
        raise BillingError("provider_not_configured", provider="cryptobot")
    key = ("cryptobot", settings.cryptobot_api_url, _fingerprint(token))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = CryptoBotClient(settings.cryptobot_api_url, token)
    assert isinstance(client, CryptoBotClient)
    return client


def configured(settings: Settings, provider: str) -> bool:
    if provider == "yookassa":
        return bool(settings.yookassa_shop_id and settings.yookassa_secret_key)
    if provider == "cryptobot":
        return bool(settings.cryptobot_token)
    return False


_bot_usernames: dict[str, str] = {}


def return_url(runtime: Runtime) -> str:
    """Where the payer goes back after paying: PAYMENT_RETURN_URL, else the bot's chat."""
    configured_url = runtime.settings.payment_return_url
    if configured_url:
        return str(configured_url)
    token_key = _fingerprint(runtime.settings.bot_token)
    username = _bot_usernames.get(token_key)
    if username is None:
        try:
            me = runtime.sender.call("getMe")
            username = str(me.get("username") or "")
        except Exception:
            log.warning("getMe failed: the return URL falls back to https://t.me")
            return "https://t.me"
        _bot_usernames[token_key] = username
    return f"https://t.me/{username}" if username else "https://t.me"


# ---------------------------------------------------------------- starting a payment

def _amount(payment_type: str, plan: str | None, amount_minor: int | None,
            currency: str) -> int:
    if payment_type == "subscription":
        if plan not in billing.PLAN_DAYS:
            raise BillingError("unknown_plan", plan=plan)
        return billing.price(plan, currency)
    if payment_type == "balance_topup":
        if amount_minor is None or isinstance(amount_minor, bool) \
                or not isinstance(amount_minor, int):
            raise BillingError("amount_required")
        if not TOPUP_MIN_MINOR <= amount_minor <= TOPUP_MAX_MINOR:
            raise BillingError("amount_out_of_range", min=TOPUP_MIN_MINOR,
                               max=TOPUP_MAX_MINOR)
        return amount_minor
    raise BillingError("unknown_payment_type", payment_type=payment_type)


def _user(runtime: Runtime, user_id: int) -> tuple[str, int]:
    """(language, telegram id) of the paying user."""
    with Session(runtime.engine) as session:
        row = session.execute(select(User.language, User.telegram_id)
                              .where(User.id == user_id)).first()
    if row is None:
        raise BillingError("unknown_user")
    return str(row.language), int(row.telegram_id)


def start_payment(runtime: Runtime, user_id: int, provider: str, payment_type: str, *,
                  plan: str | None = None, amount_minor: int | None = None,
                  currency: str = "RUB") -> StartedPayment:
    """Create the payment at the provider and return where the user pays.

    BillingError codes: `unknown_provider`, `provider_not_configured`,
    `unsupported_currency`, `unknown_plan`, `no_price`, `amount_required`,
    `amount_out_of_range`, `unknown_payment_type`, `unknown_user`,
    `receipt_email_required` (receipts are on and the user has no e-mail yet) (nothing written);
    `provider_unavailable` (timeouts / 5xx after retries) and `provider_error` (a refusal or an
    unreadable answer): the row is left `failed` with the reason, and the user may retry.
    """
    if provider not in PROVIDERS:
        raise BillingError("unknown_provider", provider=provider)
    if currency not in CURRENCIES[provider]:
        raise BillingError("unsupported_currency", currency=currency)
    amount = _amount(payment_type, plan, amount_minor, currency)
    settings = runtime.settings
    client = yookassa_client(settings) if provider == "yookassa" \
        else cryptobot_client(settings)
    language, telegram_id = _user(runtime, user_id)
    t = Translator(language)
    description = t.gettext(DESCRIPTIONS[plan if payment_type == "subscription" and plan
                                         else "balance_topup"])
    receipt = _receipt(runtime, user_id, provider, payment_type, description, amount, currency)
    payment_id, key = billing.create_payment(runtime.engine, user_id, provider, payment_type,
                                             amount, currency, plan, description)
    log.info("Payment created", extra={"payment_id": payment_id, "provider": provider,
                                       "payment_type": payment_type, "amount_minor": amount,
                                       "currency": currency})
    origin = Origin(payment_id, key, telegram_id, payment_type,
                    plan if payment_type == "subscription" else None)
    try:
        if isinstance(client, YooKassaClient):
            created = client.create_payment(
                amount_minor=amount, currency=currency, idempotence_key=str(key),
                return_url=return_url(runtime), description=description,
                metadata=origin.fields(), receipt=receipt)
            provider_id, url = created.id, created.confirmation_url
        else:
            invoice = client.create_invoice(
                amount_minor=amount, fiat=currency, payload=origin.payload(),
                description=description,
                accepted_assets=settings.cryptobot_accepted_assets,
                expires_in=settings.cryptobot_invoice_expires_in,
                return_url=return_url(runtime))
            provider_id, url = str(invoice.invoice_id), invoice.pay_url
        if not url:
            raise MalformedAnswer("no confirmation URL in the answer")
        billing.attach_provider_payment(runtime.engine, payment_id, provider_id, url)
    except ProviderUnavailable as exc:
        _creation_failed(runtime, payment_id, provider, exc)
        raise BillingError("provider_unavailable", provider=provider) from None
    except (ProviderRefused, MalformedAnswer, MalformedInvoice, BillingError) as exc:
        _creation_failed(runtime, payment_id, provider, exc)
        raise BillingError("provider_error", provider=provider) from None
    return StartedPayment(payment_id, provider, url, amount, currency)


def _receipt(runtime: Runtime, user_id: int, provider: str, payment_type: str,
             description: str, amount_minor: int, currency: str) -> dict[str, Any] | None:
    """The 54-FZ receipt a YooKassa payment carries when YOOKASSA_RECEIPTS is on."""
    settings = runtime.settings
    if provider != "yookassa" or not settings.yookassa_receipts:
        return None
    email = receipts.stored_email(runtime.engine, user_id)
    if email is None:
        raise BillingError("receipt_email_required")
    return receipts.build_receipt(
        email=email, description=description, amount_minor=amount_minor, currency=currency,
        payment_type=payment_type, vat_code=settings.yookassa_vat_code,
        tax_system_code=settings.yookassa_tax_system_code)


def _creation_failed(runtime: Runtime, payment_id: int, provider: str,
                     exc: Exception) -> None:
    reason = str(exc)
    billing.fail_payment(runtime.engine, payment_id, reason)
    log.error("create_payment failed", extra={"payment_id": payment_id, "provider": provider,
                                              "error": reason})
    runtime.alerts.raise_alert(
        "WARNING", f"payments {provider}",
        f"creating a payment failed ({reason}); payment {payment_id} is marked failed, the "
        "user can retry", fingerprint=f"payment_create_failed:{provider}")


# ---------------------------------------------------------------- applying the provider's word

def alert_mismatch(runtime: Runtime, provider: str, provider_id: str, payment_id: int | None,
                    problem: str) -> Settlement:
    log.error("payment does not match our record", extra={
        "provider": provider, "provider_payment_id": provider_id, "payment_id": payment_id,
        "problem": problem})
    runtime.alerts.raise_alert(
        "CRITICAL", f"payments {provider}",
        f"{provider} payment {provider_id} (our payment {payment_id}) was not credited: "
        f"{problem}. Check it with `habitbot payments show {payment_id or provider_id}`.",
        fingerprint=f"payment_mismatch:{provider}:{provider_id}")
    return Settlement("mismatch", payment_id, detail=problem)


def alert_unknown(runtime: Runtime, provider: str, provider_id: str,
                   detail: str) -> Settlement:
    log.warning("payment unknown to us", extra={"provider": provider,
                                                "provider_payment_id": provider_id,
                                                "problem": detail})
    runtime.alerts.raise_alert(
        "WARNING", f"payments {provider}",
        f"{provider} payment {provider_id} is not one of ours ({detail}); nothing was changed",
        fingerprint=f"payment_unknown:{provider}:{provider_id}")
    return Settlement("unknown", detail=detail)


def find_row(runtime: Runtime, provider: str, origin: Origin,
             provider_id: str) -> Payment | None:
    """Our row for a provider's record: by our idempotence key when the record carries it
    (our numeric id may name another payment after a database restore), else by our id,
    else by the provider's id."""
    if origin.key is not None:
        row = billing.find_payment_by_key(runtime.engine, origin.key)
        if row is not None:
            return row
    elif origin.payment_id is not None:
        row = billing.get_payment(runtime.engine, origin.payment_id)
        if row is not None:
            return row
    return billing.find_payment(runtime.engine, provider, provider_id)


def restore_row(runtime: Runtime, provider: str, origin: Origin, provider_id: str,
                amount_minor: int, currency: str, raw: dict) -> Payment | None:
    """Re-create a paid payment our database lost (restored from an older backup) from the
    provider's record, so it can be credited exactly once; None when the record does not
    say enough (created before our records carried the user and the purpose)."""
    if not origin.restorable:
        return None
    assert origin.key is not None and origin.telegram_id is not None
    description = raw.get("description")
    try:
        restored = billing.restore_payment(
            runtime.engine, key=origin.key, telegram_id=origin.telegram_id, provider=provider,
            provider_payment_id=provider_id, payment_type=str(origin.payment_type),
            plan=origin.plan, amount_minor=amount_minor, currency=currency,
            description=description if isinstance(description, str) else None,
            created_at=instant(raw.get("created_at")))
    except BillingError as exc:
        log.error("payment could not be restored", extra={
            "provider": provider, "provider_payment_id": provider_id, "error": exc.code})
        return None
    if restored.created:
        runtime.alerts.raise_alert(
            "WARNING", f"payments {provider}",
            f"{provider} payment {provider_id} was paid but missing in our database (restored "
            f"from an older backup?); re-created from the provider's record as payment "
            f"{restored.payment.id} (it was {origin.payment_id}) for Telegram user "
            f"{origin.telegram_id}" + (", whose user row was re-created too"
                                       if restored.user_created else ""),
            fingerprint=f"payment_restored:{provider}:{provider_id}")
    return restored.payment


def instant(raw: object) -> datetime | None:
    """A provider's ISO 8601 time (`…Z` or with an offset); None when absent, unreadable or
    without a zone."""
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _complete(runtime: Runtime, payment_id: int, provider: str, provider_id: str,
              amount_minor: int, currency: str, key: uuid.UUID | None = None) -> Settlement:
    settled = _credit(runtime, payment_id, provider, provider_id, amount_minor, currency, key)
    assert settled is not None
    return settled


def _credit(runtime: Runtime, payment_id: int, provider: str, provider_id: str,
            amount_minor: int, currency: str, key: uuid.UUID | None = None,
            quiet_unknown: bool = False) -> Settlement | None:
    """Credit once; every disagreement with our row is refused inside the locked
    transaction and becomes an alert. With `quiet_unknown`, a payment id that is not (or no
    longer) the payment the provider's record names returns None instead."""
    try:
        completion = billing.complete_payment(runtime.engine, payment_id, amount_minor,
                                              currency, provider_id, provider=provider,
                                              idempotence_key=key)
    except BillingError as exc:
        if quiet_unknown and exc.code in ("unknown_payment", "key_mismatch"):
            return None
        if exc.code in ("unknown_payment", "wrong_provider", "key_mismatch"):
            return alert_unknown(runtime, provider, provider_id,
                                 f"our payment {payment_id} named by it is not a {provider} "
                                 "payment")
        return alert_mismatch(runtime, provider, provider_id, payment_id,
                              _refusal(exc, provider, payment_id, amount_minor, currency))
    outcome = "credited" if completion.credited else "already_final"
    return Settlement(outcome, payment_id, completion)


def _refusal(exc: BillingError, provider: str, payment_id: int, amount_minor: int,
             currency: str) -> str:
    """complete_payment's refusal in words for the operator."""
    if exc.code == "amount_mismatch":
        return (f"amount {amount_minor} {currency} differs from ours "
                f"{exc.params.get('amount_minor')} {exc.params.get('currency')}")
    if exc.code == "provider_id_mismatch":
        return f"our payment {payment_id} is {provider} payment {exc.params.get('ours')}"
    if exc.code == "provider_id_conflict":
        return "this provider payment already credited another payment of ours"
    return exc.code


def settle_yookassa(runtime: Runtime, payment: YooKassaPayment,
                    expected_payment_id: int | None = None) -> Settlement:
    """Apply a YooKassa payment object *re-read from the API* to our row."""
    client = yookassa_client(runtime.settings)
    origin = payment.origin
    our_id = origin.payment_id
    if payment.status == "succeeded" and our_id is not None \
            and expected_payment_id in (None, our_id) and not _other_shop(runtime, payment):
        # The common case, in one locked transaction that also checks provider, provider
        # id, key, amount and currency against our row.
        settled = _credit(runtime, our_id, "yookassa", payment.id, payment.amount_minor,
                          payment.currency, origin.key, quiet_unknown=origin.key is not None)
        if settled is not None:
            return settled
    row = find_row(runtime, "yookassa", origin, payment.id)
    if row is None and payment.status in ("succeeded", "waiting_for_capture") \
            and not _other_shop(runtime, payment):
        row = restore_row(runtime, "yookassa", origin, payment.id, payment.amount_minor,
                          payment.currency, payment.raw)
    if row is None or row.provider != "yookassa":
        if payment.status == "waiting_for_capture":
            _cancel_at_yookassa(runtime, client, payment, None)
        return alert_unknown(runtime, "yookassa", payment.id,
                             "no payment of ours has this id in its metadata")
    problem = _yookassa_problem(runtime, row, payment, expected_payment_id)
    if problem:
        if payment.status == "waiting_for_capture":
            _cancel_at_yookassa(runtime, client, payment, row)
        return alert_mismatch(runtime, "yookassa", payment.id, row.id, problem)
    if payment.status == "succeeded":
        return _complete(runtime, row.id, "yookassa", payment.id, payment.amount_minor,
                         payment.currency, row.idempotence_key)
    if payment.status == "waiting_for_capture":
        if row.status not in billing.OPEN_STATUSES:
            _cancel_at_yookassa(runtime, client, payment, row)
            return Settlement("already_final", row.id, detail=row.status)
        billing.mark_waiting_for_capture(runtime.engine, row.id)
        captured = client.capture(payment.id, yookassa.derived_key(row.idempotence_key,
                                                                   "capture"),
                                  row.amount_minor, row.currency)
        log.info("Payment captured", extra={"payment_id": row.id, "status": captured.status})
        if captured.status == "succeeded":
            return _complete(runtime, row.id, "yookassa", captured.id, captured.amount_minor,
                             captured.currency, row.idempotence_key)
        return Settlement("pending", row.id, detail=captured.status)
    if payment.status == "canceled":
        billing.cancel_payment(runtime.engine, row.id, payment.cancellation_reason)
        return Settlement("canceled", row.id, detail=payment.cancellation_reason or "")
    return Settlement("pending", row.id, detail=payment.status)


def _other_shop(runtime: Runtime, payment: YooKassaPayment) -> bool:
    shop_id = runtime.settings.yookassa_shop_id
    return bool(payment.account_id and shop_id and str(payment.account_id) != str(shop_id))


def _yookassa_problem(runtime: Runtime, row: Payment, payment: YooKassaPayment,
                      expected_payment_id: int | None) -> str | None:
    if expected_payment_id is not None and row.id != expected_payment_id:
        return f"it belongs to payment {row.id}, not {expected_payment_id}"
    if _other_shop(runtime, payment):
        return f"it belongs to shop {payment.account_id}"
    origin = payment.origin
    if origin.key is not None and origin.key != row.idempotence_key:
        return f"its metadata names another payment (our key {origin.key})"
    if origin.key is None and origin.payment_id not in (None, row.id):
        return f"its metadata names payment {origin.payment_id}"
    if row.provider_payment_id and row.provider_payment_id != payment.id:
        return f"our payment {row.id} is yookassa payment {row.provider_payment_id}"
    if (payment.amount_minor, payment.currency) != (row.amount_minor, row.currency):
        return (f"amount {payment.amount_minor} {payment.currency} differs from ours "
                f"{row.amount_minor} {row.currency}")
    return None


def _cancel_at_yookassa(runtime: Runtime, client: YooKassaClient, payment: YooKassaPayment,
                        row: Payment | None) -> None:
    """Release an authorisation we will not capture (not ours, or not matching ours)."""
    key = (yookassa.derived_key(row.idempotence_key, "cancel") if row is not None
           else str(uuid.uuid5(uuid.NAMESPACE_URL, f"yookassa:{payment.id}:cancel")))
    try:
        client.cancel(payment.id, key)
    except ProviderError as exc:
        log.error("could not cancel an authorisation", extra={
            "provider_payment_id": payment.id, "error": str(exc)})
        return
    log.info("Authorisation canceled", extra={"provider_payment_id": payment.id,
                                              "payment_id": row.id if row else None})
    if row is not None:
        billing.cancel_payment(runtime.engine, row.id, "canceled_by_merchant")


def settle_cryptobot(runtime: Runtime, invoice: Invoice,
                     expected_payment_id: int | None = None) -> Settlement:
    """Apply a Crypto Pay invoice (from a signed update or getInvoices) to our row."""
    provider_id = str(invoice.invoice_id)
    origin = invoice.origin
    row = find_row(runtime, "cryptobot", origin, provider_id)
    if row is None and invoice.status == "paid" and invoice.currency_type == "fiat":
        row = restore_row(runtime, "cryptobot", origin, provider_id, invoice.amount_minor,
                          invoice.currency, invoice.raw)
    if row is None or row.provider != "cryptobot":
        return alert_unknown(runtime, "cryptobot", provider_id,
                              "no payment of ours has this invoice's payload")
    problem = None
    if expected_payment_id is not None and row.id != expected_payment_id:
        problem = f"it belongs to payment {row.id}, not {expected_payment_id}"
    elif origin.key is not None and origin.key != row.idempotence_key:
        problem = f"its payload names another payment (our key {origin.key})"
    elif origin.key is None and origin.payment_id not in (None, row.id):
        problem = f"its payload names payment {origin.payment_id}"
    elif row.provider_payment_id and row.provider_payment_id != provider_id:
        problem = f"our payment {row.id} is invoice {row.provider_payment_id}"
    elif invoice.currency_type != "fiat" or (invoice.amount_minor, invoice.currency) != (
            row.amount_minor, row.currency):
        problem = (f"amount {invoice.amount_minor} {invoice.currency} differs from ours "
                   f"{row.amount_minor} {row.currency}")
    if problem:
        return alert_mismatch(runtime, "cryptobot", provider_id, row.id, problem)
    if invoice.status == "paid":
        return _complete(runtime, row.id, "cryptobot", provider_id, invoice.amount_minor,
                         invoice.currency, row.idempotence_key)
    if invoice.status == "expired":
        billing.cancel_payment(runtime.engine, row.id, "expired")
        return Settlement("canceled", row.id, detail="expired")
    return Settlement("pending", row.id, detail=invoice.status)


def settle_from_provider(runtime: Runtime, row: Payment,
                         provider_id: str | None = None) -> Settlement:
    """Ask the provider about one of our payments now and apply the answer. `provider_id`
    stands in when our row lost the provider's id (the metadata must still name the row).

    ProviderError propagates (the caller decides: button, CLI, reconciliation)."""
    known = row.provider_payment_id or provider_id
    if row.provider == "yookassa":
        if not known:
            return Settlement("pending", row.id, detail="not created at YooKassa")
        client = yookassa_client(runtime.settings)
        try:
            payment = client.get_payment(known)
        except ProviderRefused as exc:
            if exc.not_found:
                return Settlement("unknown", row.id, detail="YooKassa does not know it")
            raise
        return settle_yookassa(runtime, payment, expected_payment_id=row.id)
    if row.provider == "cryptobot":
        if not known or not known.isdigit():
            return Settlement("pending", row.id, detail="no invoice was created")
        invoice_id = int(known)
        found = cryptobot_client(runtime.settings).get_invoices([invoice_id]).get(invoice_id)
        if found is None:
            return Settlement("unknown", row.id, detail="Crypto Pay does not know it")
        return settle_cryptobot(runtime, found, expected_payment_id=row.id)
    raise BillingError("unsupported_provider", provider=row.provider)


# ---------------------------------------------------------------- the user's button

def check_payment(runtime: Runtime, payment_id: int, user_id: int) -> Completion | None:
    """The user's "check payment" button: ask the provider now, credit once if paid.

    Returns the Completion (credited=False when it was already final: a racing webhook
    credited it, or it was canceled — see `status`), or None while it is still unpaid.
    The caller tells the user (the button's answer); nothing is sent from here.
    BillingError: `unknown_payment` (no such payment, or another user's),
    `provider_unavailable`, `provider_not_configured`, `payment_mismatch`.
    """
    row = billing.get_payment(runtime.engine, payment_id)
    if row is None or row.user_id != user_id:
        raise BillingError("unknown_payment")
    if row.status not in billing.OPEN_STATUSES:
        return Completion(row.id, False, row.status)
    if row.provider not in PROVIDERS:
        return None
    try:
        settled = settle_from_provider(runtime, row)
    except ProviderUnavailable:
        raise BillingError("provider_unavailable", provider=row.provider) from None
    except (ProviderRefused, MalformedAnswer, MalformedInvoice) as exc:
        log.error("check payment failed", extra={"payment_id": payment_id, "error": str(exc)})
        raise BillingError("provider_error", provider=row.provider) from None
    if settled.outcome in ("credited", "already_final"):
        if settled.completion is not None:
            return settled.completion
        current = billing.get_payment(runtime.engine, payment_id)
        return Completion(payment_id, False, current.status if current else "unknown")
    if settled.outcome == "canceled":
        return Completion(payment_id, False, "canceled")
    if settled.outcome == "mismatch":
        raise BillingError("payment_mismatch")
    return None

