"""Provider notifications, after the edge has authenticated them (source IP, signature).

YooKassa notifications are only a hint: the payment (or refund) is re-read from the API and
only the answer is trusted, so a forged or stale body can at most make us look. Crypto Pay
updates are signed with our token, so the invoice in a verified update is trusted as it is.
Either way the result goes through `service.settle_*`: credit exactly once, or change nothing.

Errors for the edge: `BadNotification` (malformed: the sender gets a 4xx), `ProviderError`
and database errors propagate (the edge answers 5xx and the provider retries later).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from habitbot.payments import service
from habitbot.payments.cryptobot import MalformedInvoice, parse_invoice
from habitbot.payments.http import ProviderRefused
from habitbot.payments.yookassa import YooKassaPayment, YooKassaRefund
from habitbot.services import billing
from habitbot.services.billing import BillingError

if TYPE_CHECKING:
    from habitbot.runtime import Runtime

log = logging.getLogger(__name__)

# YooKassa ids go into API paths: nothing but id characters may pass.
YOOKASSA_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PAYMENT_EVENTS = ("payment.succeeded", "payment.canceled", "payment.waiting_for_capture")
REFUND_EVENTS = ("refund.succeeded",)


class BadNotification(ValueError):
    """The body is not a notification we can read; nothing was changed."""


@dataclass(frozen=True)
class Handled:
    """outcome: a `service.Settlement` outcome, or `refunded` (a refund applied now),
    `ignored` (an event we do not act on), `other_shop` (not addressed to our shop)."""

    outcome: str
    payment_id: int | None = None
    refund_id: int | None = None
    detail: str = ""
    refund: billing.RefundOutcome | None = None


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadNotification("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadNotification("the body is not a JSON object")
    return data


# ---------------------------------------------------------------- YooKassa

def parse_yookassa(body: bytes) -> tuple[str, dict[str, Any]]:
    """(event, object) of `{"type": "notification", "event", "object"}`."""
    data = _json_object(body)
    event, obj = data.get("event"), data.get("object")
    if data.get("type") != "notification" or not isinstance(event, str) \
            or not isinstance(obj, dict):
        raise BadNotification("not a YooKassa notification")
    if not isinstance(obj.get("id"), str) or not YOOKASSA_ID.match(obj["id"]):
        raise BadNotification("the object has no valid id")
    if event in REFUND_EVENTS and (not isinstance(obj.get("payment_id"), str)
                                   or not YOOKASSA_ID.match(obj["payment_id"])):
        raise BadNotification("the refund has no valid payment_id")
    return event, obj


def handle_yookassa(runtime: Runtime, event: str, obj: dict[str, Any]) -> Handled:
    shop_id = runtime.settings.yookassa_shop_id
    recipient = obj.get("recipient")
    account = recipient.get("account_id") if isinstance(recipient, dict) else None
    if account is not None and str(account) != str(shop_id):
        log.warning("notification for another shop", extra={
            "event": event, "provider_payment_id": obj["id"], "account_id": str(account)})
        runtime.alerts.raise_alert(
            "WARNING", "payments yookassa",
            f"a notification for shop {account} reached our webhook (we are shop {shop_id}); "
            "ignored. Check the webhook URL in that shop's settings.",
            fingerprint=f"yookassa_other_shop:{account}")
        return Handled("other_shop", detail=str(account))
    if event in PAYMENT_EVENTS:
        return _payment_event(runtime, obj["id"])
    if event in REFUND_EVENTS:
        return _refund_event(runtime, obj["id"])
    log.info("notification ignored", extra={"event": event, "provider_payment_id": obj["id"]})
    return Handled("ignored", detail=event)


def _reread_payment(runtime: Runtime, provider_id: str) -> YooKassaPayment | None:
    try:
        return service.yookassa_client(runtime.settings).get_payment(provider_id)
    except ProviderRefused as exc:
        if exc.not_found:
            return None
        raise


def _payment_event(runtime: Runtime, provider_id: str) -> Handled:
    payment = _reread_payment(runtime, provider_id)
    if payment is None:
        settled = service.alert_unknown(runtime, "yookassa", provider_id,
                                         "YooKassa does not know this payment")
        return Handled(settled.outcome, detail=settled.detail)
    settled = service.settle_yookassa(runtime, payment)
    return Handled(settled.outcome, settled.payment_id, detail=settled.detail)


def _refund_event(runtime: Runtime, refund_id: str) -> Handled:
    client = service.yookassa_client(runtime.settings)
    try:
        refund = client.get_refund(refund_id)
    except ProviderRefused as exc:
        if not exc.not_found:
            raise
        settled = service.alert_unknown(runtime, "yookassa", refund_id,
                                         "YooKassa does not know this refund")
        return Handled(settled.outcome, detail=settled.detail)
    return apply_yookassa_refund(runtime, refund)


def apply_yookassa_refund(runtime: Runtime, refund: YooKassaRefund) -> Handled:
    """A refund object read from YooKassa's API (re-read for a notification, or listed by the
    poller): applied to our payment once."""
    if refund.status != "succeeded":
        return Handled("pending", detail=f"refund {refund.status}")
    row = billing.find_payment(runtime.engine, "yookassa", refund.payment_id)
    if row is None:
        payment = _reread_payment(runtime, refund.payment_id)
        if payment is not None:
            # By our key when the metadata has it: after a restore our id may be another's.
            row = service.find_row(runtime, "yookassa", payment.origin, payment.id)
            if row is not None and row.provider_payment_id not in (None, payment.id):
                row = None
        if row is None or row.provider != "yookassa":
            settled = service.alert_unknown(runtime, "yookassa", refund.payment_id,
                                             f"refund {refund.id} of a payment we do not have")
            return Handled(settled.outcome, detail=settled.detail)
    if row.status in billing.OPEN_STATUSES:
        # Out of order: the refund is news before the payment's success was; apply both.
        service.settle_from_provider(runtime, row)
    return apply_provider_refund(runtime, row.id, "yookassa", refund.payment_id, refund.id,
                                 refund.amount_minor, refund.currency,
                                 refund.raw.get("description"))


def apply_provider_refund(runtime: Runtime, payment_id: int, provider: str, provider_id: str,
                          refund_id: str, amount_minor: int, currency: str,
                          reason: str | None = None) -> Handled:
    """A refund the provider made: apply it once, alert on a mismatch or a shortfall."""
    row = billing.get_payment(runtime.engine, payment_id)
    if row is None or row.currency != currency:
        settled = service.alert_mismatch(
            runtime, provider, provider_id, payment_id,
            f"refund {refund_id} is in {currency}, the payment in "
            f"{row.currency if row else 'nothing'}")
        return Handled(settled.outcome, payment_id, detail=settled.detail)
    try:
        outcome = billing.apply_refund(runtime.engine, payment_id, refund_id, amount_minor,
                                       reason=str(reason) if reason else None)
    except BillingError as exc:
        settled = service.alert_mismatch(runtime, provider, provider_id, payment_id,
                                          f"refund {refund_id} was not applied: {exc.code}")
        return Handled(settled.outcome, payment_id, detail=settled.detail)
    if outcome.shortfall_minor:
        runtime.alerts.raise_alert(
            "CRITICAL", f"payments {provider}",
            f"refund {refund_id} of payment {payment_id}: the user had already spent "
            f"{outcome.shortfall_minor} of the {amount_minor} minor units refunded; only "
            f"{outcome.debited_minor} was taken back from the balance.",
            fingerprint=f"refund_shortfall:{provider}:{refund_id}")
    if not outcome.applied:
        return Handled("already_final", payment_id, detail="refund already applied",
                       refund=outcome)
    return Handled("refunded", payment_id, outcome.refund_id, refund=outcome)


# ---------------------------------------------------------------- Crypto Pay

def parse_cryptobot(body: bytes) -> tuple[str, dict[str, Any]]:
    """(update_type, payload) of `{"update_id", "update_type", "payload"}`."""
    data = _json_object(body)
    update_type, payload = data.get("update_type"), data.get("payload")
    if not isinstance(update_type, str) or not isinstance(payload, dict):
        raise BadNotification("not a Crypto Pay update")
    return update_type, payload


def handle_cryptobot(runtime: Runtime, update_type: str, payload: dict[str, Any]) -> Handled:
    if update_type != "invoice_paid":
        log.info("update ignored", extra={"update_type": update_type})
        return Handled("ignored", detail=update_type)
    try:
        invoice = parse_invoice(payload)
    except MalformedInvoice:
        raise BadNotification("the invoice cannot be read") from None
    settled = service.settle_cryptobot(runtime, invoice)
    return Handled(settled.outcome, settled.payment_id, detail=settled.detail)
