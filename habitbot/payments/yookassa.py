"""YooKassa API v3 client: plain requests with our timeouts and our idempotence keys.

Basic auth (shop id : secret key). Every POST carries an `Idempotence-Key` chosen by the
caller and reused on every retry, so a timed-out creation that is retried returns the same
payment instead of making a second one. The official SDK is not used: it sends no network
timeout and makes a new key per call.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import requests

from habitbot.http_sessions import Response
from habitbot.payments import money
from habitbot.payments.http import ProviderHttp
from habitbot.payments.origin import Origin, from_fields

PROVIDER = "yookassa"
DESCRIPTION_LIMIT = 128


@dataclass(frozen=True)
class YooKassaPayment:
    """The fields of a payment object we act on (the API answer, re-read, never a webhook)."""

    id: str
    status: str  # pending | waiting_for_capture | succeeded | canceled
    amount_minor: int
    currency: str
    metadata: dict[str, Any]
    account_id: str | None
    confirmation_url: str | None
    cancellation_reason: str | None
    refunded_minor: int
    raw: dict[str, Any]

    @property
    def origin(self) -> Origin:
        """What our metadata says the payment is (see habitbot.payments.origin)."""
        return from_fields(self.metadata)

    @property
    def our_payment_id(self) -> int | None:
        """`metadata.payment_id` as our payments.id, None when absent or malformed."""
        return self.origin.payment_id


@dataclass(frozen=True)
class YooKassaRefund:
    id: str
    payment_id: str
    status: str  # pending | succeeded | canceled
    amount_minor: int
    currency: str
    raw: dict[str, Any]


class MalformedAnswer(ValueError):
    """The API answered 2xx with a body we cannot read."""


def parse_payment(data: Any) -> YooKassaPayment:
    try:
        amount = data["amount"]
        currency = str(amount["currency"])
        refunded = data.get("refunded_amount") or {}
        return YooKassaPayment(
            id=str(data["id"]), status=str(data["status"]),
            amount_minor=money.to_minor(amount["value"], currency), currency=currency,
            metadata=dict(data.get("metadata") or {}),
            account_id=(data.get("recipient") or {}).get("account_id"),
            confirmation_url=(data.get("confirmation") or {}).get("confirmation_url"),
            cancellation_reason=(data.get("cancellation_details") or {}).get("reason"),
            refunded_minor=money.to_minor(refunded.get("value", 0), currency),
            raw=data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedAnswer(f"unreadable payment object: {type(exc).__name__}") from None


def parse_refund(data: Any) -> YooKassaRefund:
    try:
        amount = data["amount"]
        currency = str(amount["currency"])
        return YooKassaRefund(id=str(data["id"]), payment_id=str(data["payment_id"]),
                              status=str(data["status"]),
                              amount_minor=money.to_minor(amount["value"], currency),
                              currency=currency, raw=data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedAnswer(f"unreadable refund object: {type(exc).__name__}") from None


def _error(response: Response) -> tuple[str | None, str]:
    """YooKassa's `{"type": "error", "code", "description"}`, or the HTTP reason."""
    try:
        body = response.json()
    except ValueError:
        return None, response.reason or "error"
    if isinstance(body, dict):
        return body.get("code"), str(body.get("description") or body.get("code") or "error")
    return None, response.reason or "error"


def derived_key(key: uuid.UUID, operation: str) -> str:
    """A stable key for a follow-up operation (capture, cancel) of one of our payments."""
    return str(uuid.uuid5(key, operation))


class YooKassaClient:
    def __init__(self, api_url: str, shop_id: str, secret_key: str,
                 http: ProviderHttp | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.shop_id = shop_id
        self._auth = (shop_id, secret_key)
        self.http = http or ProviderHttp(PROVIDER)

    def close(self) -> None:
        self.http.close()

    def _call(self, operation: str, method: str, path: str, key: str | None = None,
              body: dict[str, Any] | None = None) -> Any:
        headers = {"Idempotence-Key": key} if key else {}
        response = self.http.request(operation, method, f"{self.api_url}/{path}", _error,
                                     auth=self._auth, json=body, headers=headers)
        try:
            return response.json()
        except ValueError:
            raise MalformedAnswer(f"{operation}: the answer is not JSON") from None

    def create_payment(self, *, amount_minor: int, currency: str, idempotence_key: str,
                       return_url: str, description: str, metadata: dict[str, str],
                       receipt: dict[str, Any] | None = None) -> YooKassaPayment:
        body: dict[str, Any] = {
            "amount": {"value": money.to_text(amount_minor, currency), "currency": currency},
            "capture": True,
            "confirmation": {"type": "redirect", "return_url": return_url},
            "description": description[:DESCRIPTION_LIMIT],
            "metadata": metadata,
        }
        if receipt is not None:
            body["receipt"] = receipt
        return parse_payment(self._call("create", "POST", "payments", idempotence_key, body))

    def get_payment(self, payment_id: str) -> YooKassaPayment:
        return parse_payment(self._call("get_payment", "GET", f"payments/{payment_id}"))

    def capture(self, payment_id: str, idempotence_key: str, amount_minor: int,
                currency: str) -> YooKassaPayment:
        body = {"amount": {"value": money.to_text(amount_minor, currency), "currency": currency}}
        return parse_payment(self._call("capture", "POST", f"payments/{payment_id}/capture",
                                        idempotence_key, body))

    def cancel(self, payment_id: str, idempotence_key: str) -> YooKassaPayment:
        return parse_payment(self._call("cancel", "POST", f"payments/{payment_id}/cancel",
                                        idempotence_key, {}))

    def create_refund(self, payment_id: str, amount_minor: int, currency: str,
                      idempotence_key: str, description: str | None = None) -> YooKassaRefund:
        body: dict[str, Any] = {
            "payment_id": payment_id,
            "amount": {"value": money.to_text(amount_minor, currency), "currency": currency}}
        if description:
            body["description"] = description[:250]
        return parse_refund(self._call("refund", "POST", "refunds", idempotence_key, body))

    def get_refund(self, refund_id: str) -> YooKassaRefund:
        return parse_refund(self._call("get_refund", "GET", f"refunds/{refund_id}"))

    def list_refunds(self, payment_id: str | None = None,
                     created_gte: str | None = None) -> list[YooKassaRefund]:
        """The refunds of one payment, or all created since `created_gte` (following
        cursors)."""
        found: list[YooKassaRefund] = []
        cursor: str | None = None
        while True:
            params = {"limit": "100"}
            if payment_id:
                params["payment_id"] = payment_id
            if created_gte:
                params["created_at.gte"] = created_gte
            if cursor:
                params["cursor"] = cursor
            query = "&".join(f"{k}={requests.utils.quote(v)}" for k, v in params.items())
            page = self._call("list_refunds", "GET", f"refunds?{query}")
            found.extend(parse_refund(item) for item in page.get("items") or [])
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def list_payments(self, status: str | None = None, created_gte: str | None = None,
                      limit: int = 100) -> list[YooKassaPayment]:
        """Every payment (following cursors), newest first, for reconciliation."""
        found: list[YooKassaPayment] = []
        cursor: str | None = None
        while True:
            params = {"limit": str(limit)}
            if status:
                params["status"] = status
            if created_gte:
                params["created_at.gte"] = created_gte
            if cursor:
                params["cursor"] = cursor
            query = "&".join(f"{k}={requests.utils.quote(v)}" for k, v in params.items())
            page = self._call("list_payments", "GET", f"payments?{query}")
            found.extend(parse_payment(item) for item in page.get("items") or [])
            cursor = page.get("next_cursor")
            if not cursor:
                return found
