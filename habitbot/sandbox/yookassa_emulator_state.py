"""Payments and refunds of the YooKassa emulator: objects, validation and status transitions.

Shapes follow YooKassa API v3 and the real payloads in ``shared/samples``: money is
``{"value": "100.00", "currency": "RUB"}`` with string values, times look like
``2018-01-31T10:12:06.249Z``, ids like ``2203aa1d-000f-5000-8000-17102541fd31``, errors are
``{"type": "error", "id", "code", "description", "parameter"}``. Statuses move
pending → (waiting_for_capture when ``capture`` is false) → succeeded | canceled, and every move
calls ``notify(event, object)`` so the emulator can send the notification. The caller holds the
emulator's lock around every method of :class:`Ledger`.
"""

from __future__ import annotations

import copy
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

CURRENCIES = frozenset({"RUB", "USD", "EUR", "BYN", "CNY", "KZT", "UAH", "UZS"})
FEE_RATE = Decimal("0.035")
CENT = Decimal("0.01")
CONFIRMATION_TYPES = ("redirect", "embedded", "external")
METHOD_TYPES = frozenset({"bank_card", "sbp", "yoo_money", "sberbank", "tinkoff_bank",
                          "mir_pay", "sber_loan"})
CANCEL_PARTIES = {
    "expired_on_confirmation": "yoo_money", "expired_on_capture": "yoo_money",
    "canceled_by_merchant": "merchant", "fraud_suspected": "yoo_money",
    "internal_timeout": "yoo_money", "permission_revoked": "yoo_money",
    "3d_secure_failed": "payment_network", "call_issuer": "payment_network",
    "card_expired": "payment_network", "country_forbidden": "payment_network",
    "general_decline": "payment_network", "insufficient_funds": "payment_network",
    "payment_method_limit_exceeded": "payment_network",
    "payment_method_restricted": "payment_network",
}
EVENTS = ("payment.waiting_for_capture", "payment.succeeded", "payment.canceled",
          "refund.succeeded")
TEST_CARD = {"first6": "555555", "last4": "4444", "expiry_month": "12", "expiry_year": "2030",
             "card_type": "MasterCard", "issuer_country": "RU", "issuer_name": "Sberbank"}

Notify = Callable[[str, dict[str, Any]], None]


class YooKassaError(Exception):
    """An API refusal in YooKassa's error format."""

    def __init__(self, status: int, code: str, description: str,
                 parameter: str | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description
        self.parameter = parameter

    def body(self) -> dict[str, Any]:
        data = {"type": "error", "id": str(uuid.uuid4()), "code": self.code,
                "description": self.description}
        if self.parameter:
            data["parameter"] = self.parameter
        return data


def invalid(description: str, parameter: str | None = None) -> YooKassaError:
    return YooKassaError(400, "invalid_request", description, parameter)


def iso(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def new_object_id(ts: float) -> str:
    """An id shaped like YooKassa's: 8 hex digits of time, ``-000f-5000-8000-``, 12 hex."""
    return (f"{int(ts) & 0xFFFFFFFF:08x}-000f-5000-{secrets.choice('89ab')}000-"
            f"{secrets.token_hex(6)}")


def money(value: Decimal, currency: str) -> dict[str, str]:
    return {"value": f"{value:.2f}", "currency": currency}


def parse_amount(raw: Any, parameter: str = "amount") -> tuple[Decimal, str]:
    """``{"value": "100.00" | 100, "currency": "RUB"}`` → (Decimal, currency) or a 400."""
    if not isinstance(raw, dict):
        raise invalid(f"Missing or invalid {parameter}", parameter)
    value = raw.get("value")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise invalid("Invalid amount value", f"{parameter}.value")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise invalid("Invalid amount value", f"{parameter}.value") from None
    exponent = amount.as_tuple().exponent
    if (not amount.is_finite() or amount <= 0 or amount >= Decimal("1e10")
            or (isinstance(exponent, int) and exponent < -2)):
        raise invalid("Invalid amount value: a positive number with at most 2 decimal places "
                      "is expected", f"{parameter}.value")
    currency = raw.get("currency")
    if not isinstance(currency, str) or currency not in CURRENCIES:
        raise invalid("Invalid currency", f"{parameter}.currency")
    return amount.quantize(CENT), currency


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > 16:
        raise invalid("Metadata must be an object with at most 16 keys", "metadata")
    result = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key or len(key) > 32:
            raise invalid("Metadata keys must be 1..32 characters long", "metadata")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise invalid(f"Invalid metadata value of {key}", "metadata")
        text = str(value)
        if len(text) > 512:
            raise invalid(f"Metadata value of {key} is longer than 512 characters", "metadata")
        result[key] = text
    return result


def _description(raw: Any, limit: int) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > limit:
        raise invalid(f"Description must be a string of at most {limit} characters",
                      "description")
    return raw


def _bool(raw: Any, name: str, default: bool) -> bool:
    if raw is None:
        return default
    if not isinstance(raw, bool):
        raise invalid(f"Invalid value of {name}", name)
    return raw


@dataclass
class Refund:
    refund_id: str
    payment_id: str
    amount: Decimal
    currency: str
    created_at: float
    description: str | None = None
    status: str = "succeeded"

    def to_api(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.refund_id, "payment_id": self.payment_id,
                                "status": self.status, "created_at": iso(self.created_at),
                                "amount": money(self.amount, self.currency)}
        if self.description is not None:
            data["description"] = self.description
        return data


@dataclass
class Payment:
    payment_id: str
    amount: Decimal
    currency: str
    capture: bool
    created_at: float
    recipient: dict[str, str]
    confirmation: dict[str, Any] | None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    method_type: str | None = None
    receipt: bool = False
    status: str = "pending"
    paid: bool = False
    captured_at: float | None = None
    expires_at: float | None = None
    payment_method: dict[str, Any] | None = None
    authorization_details: dict[str, Any] | None = None
    cancellation: dict[str, str] | None = None
    refunded: Decimal = Decimal("0.00")
    income: Decimal | None = None

    @property
    def refundable(self) -> bool:
        return self.status == "succeeded" and self.refunded < self.amount

    def to_api(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.payment_id, "status": self.status, "paid": self.paid,
                                "amount": money(self.amount, self.currency)}
        if self.income is not None:
            data["income_amount"] = money(self.income, self.currency)
        if self.authorization_details:
            data["authorization_details"] = copy.deepcopy(self.authorization_details)
        if self.captured_at is not None:
            data["captured_at"] = iso(self.captured_at)
        data["created_at"] = iso(self.created_at)
        if self.description is not None:
            data["description"] = self.description
        if self.expires_at is not None and self.status == "waiting_for_capture":
            data["expires_at"] = iso(self.expires_at)
        data["metadata"] = dict(self.metadata)
        if self.payment_method:
            data["payment_method"] = copy.deepcopy(self.payment_method)
        data["recipient"] = dict(self.recipient)
        data["refundable"] = self.refundable
        if self.status == "succeeded":
            data["refunded_amount"] = money(self.refunded, self.currency)
        if self.receipt and self.status != "canceled":
            data["receipt_registration"] = "succeeded" if self.status == "succeeded" else "pending"
        data["test"] = True
        if self.status == "pending" and self.confirmation:
            data["confirmation"] = dict(self.confirmation)
        if self.cancellation:
            data["cancellation_details"] = dict(self.cancellation)
        return data


class Ledger:
    """All payments and refunds of the emulated shop."""

    def __init__(self, shop_id: str, notify: Notify, pending_ttl: float | None,
                 capture_ttl: float) -> None:
        self.shop_id = shop_id
        self.notify = notify
        self.pending_ttl = pending_ttl
        self.capture_ttl = capture_ttl
        self.payments: dict[str, Payment] = {}
        self.refunds: dict[str, Refund] = {}

    def clear(self) -> None:
        self.payments.clear()
        self.refunds.clear()

    # ------------------------------------------------------------ merchant API

    def create_payment(self, body: dict[str, Any], now: float,
                       pay_url: Callable[[str], str]) -> Payment:
        amount, currency = parse_amount(body.get("amount"))
        description = _description(body.get("description"), 128)
        metadata = _metadata(body.get("metadata"))
        capture = _bool(body.get("capture"), "capture", False)
        method_type = self._method_type(body.get("payment_method_data"))
        receipt = self._receipt(body.get("receipt"))
        payment_id = new_object_id(now)
        confirmation = self._confirmation(body.get("confirmation"), payment_id, pay_url,
                                          method_type)
        payment = Payment(payment_id, amount, currency, capture, now,
                          {"account_id": self.shop_id, "gateway_id": f"{self.shop_id}1"},
                          confirmation, description, metadata, method_type, receipt)
        if method_type:
            payment.payment_method = {"type": method_type, "id": payment_id, "saved": False}
        self.payments[payment_id] = payment
        return payment

    @staticmethod
    def _method_type(raw: Any) -> str | None:
        if raw is None:
            return None
        if not isinstance(raw, dict) or raw.get("type") not in METHOD_TYPES:
            raise invalid("Invalid payment method type", "payment_method_data.type")
        return str(raw["type"])

    @staticmethod
    def _receipt(raw: Any) -> bool:
        if raw is None:
            return False
        items = raw.get("items") if isinstance(raw, dict) else None
        if not isinstance(items, list) or not items:
            raise invalid("Receipt must contain at least one item", "receipt.items")
        customer = raw.get("customer") or {}
        if not (isinstance(customer, dict) and (customer.get("email") or customer.get("phone"))
                or raw.get("email") or raw.get("phone")):
            raise invalid("Receipt needs the customer's email or phone", "receipt.customer")
        return True

    @staticmethod
    def _confirmation(raw: Any, payment_id: str, pay_url: Callable[[str], str],
                      method_type: str | None) -> dict[str, Any]:
        if raw is None:
            raise invalid("Missing confirmation type for payment method type: "
                          f"{method_type or 'bank_card'}", "confirmation")
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind not in CONFIRMATION_TYPES:
            raise invalid(f"Unsupported confirmation type {kind!r}; the emulator knows "
                          f"{', '.join(CONFIRMATION_TYPES)}", "confirmation.type")
        assert isinstance(raw, dict)
        if kind == "embedded":
            return {"type": kind, "confirmation_token": f"ct-{payment_id}"}
        if kind == "external":
            return {"type": kind}
        return_url = raw.get("return_url")
        if not isinstance(return_url, str) or not return_url or len(return_url) > 2048:
            raise invalid("Missing return_url for confirmation type redirect",
                          "confirmation.return_url")
        return {"type": kind, "return_url": return_url, "confirmation_url": pay_url(payment_id)}

    def payment(self, payment_id: str) -> Payment:
        payment = self.payments.get(payment_id)
        if payment is None:
            raise YooKassaError(404, "not_found", "Payment not found or forbidden", "payment_id")
        return payment

    def list_payments(self, query: dict[str, str]) -> dict[str, Any]:
        items = [p for p in reversed(self.payments.values())
                 if query.get("status") in (None, "", p.status)]
        return self._page([p.to_api() for p in items], query)

    @staticmethod
    def _page(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        try:
            limit = int(query.get("limit") or 10)
            start = int(query.get("cursor") or 0)
        except ValueError:
            raise invalid("Invalid limit or cursor", "limit") from None
        if not 1 <= limit <= 100 or start < 0:
            raise invalid("Limit must be within 1..100", "limit")
        page: dict[str, Any] = {"type": "list", "items": items[start:start + limit]}
        if start + limit < len(items):
            page["next_cursor"] = str(start + limit)
        return page

    def capture(self, payment_id: str, body: dict[str, Any], now: float) -> Payment:
        payment = self.payment(payment_id)
        if payment.status != "waiting_for_capture":
            raise invalid(f"Payment in status {payment.status} can't be captured: "
                          "waiting_for_capture is expected", "payment_id")
        if body.get("amount") is not None:
            amount, currency = parse_amount(body["amount"])
            if currency != payment.currency or amount > payment.amount:
                raise invalid("Capture amount must not exceed the payment amount, in the same "
                              "currency", "amount.value")
            payment.amount = amount
        self._succeed(payment, now)
        return payment

    def cancel(self, payment_id: str, now: float) -> Payment:
        payment = self.payment(payment_id)
        if payment.status != "waiting_for_capture":
            raise invalid(f"Payment in status {payment.status} can't be canceled: "
                          "waiting_for_capture is expected", "payment_id")
        self._cancel(payment, "canceled_by_merchant")
        return payment

    def create_refund(self, body: dict[str, Any], now: float) -> Refund:
        payment_id = body.get("payment_id")
        if not isinstance(payment_id, str) or not payment_id:
            raise invalid("Missing payment_id", "payment_id")
        payment = self.payments.get(payment_id)
        if payment is None:
            raise invalid("Payment not found or forbidden", "payment_id")
        amount, currency = parse_amount(body.get("amount"))
        description = _description(body.get("description"), 250)
        if payment.status != "succeeded":
            raise invalid(f"Payment in status {payment.status} can't be refunded", "payment_id")
        if currency != payment.currency:
            raise invalid("Refund currency must match the payment currency", "amount.currency")
        if amount > payment.amount - payment.refunded:
            raise invalid("Refund amount exceeds the amount available for refund",
                          "amount.value")
        refund = Refund(new_object_id(now), payment_id, amount, currency, now, description)
        self.refunds[refund.refund_id] = refund
        payment.refunded += amount
        self.notify("refund.succeeded", refund.to_api())
        return refund

    def refund(self, refund_id: str) -> Refund:
        refund = self.refunds.get(refund_id)
        if refund is None:
            raise YooKassaError(404, "not_found", "Refund not found or forbidden", "refund_id")
        return refund

    def list_refunds(self, query: dict[str, str]) -> dict[str, Any]:
        items = [r.to_api() for r in reversed(self.refunds.values())
                 if query.get("payment_id") in (None, "", r.payment_id)]
        return self._page(items, query)

    # ------------------------------------------------------------ the payer's side

    def user_pay(self, payment_id: str, now: float, card: dict[str, str] | None = None,
                 method_type: str | None = None) -> Payment:
        """The payer confirms: succeeded (``capture``) or waiting_for_capture."""
        payment = self.payment(payment_id)
        if payment.status != "pending":
            raise invalid(f"Payment is {payment.status}, it can no longer be paid", "payment_id")
        kind = method_type or payment.method_type or "bank_card"
        method: dict[str, Any] = {"type": kind, "id": payment_id, "saved": False}
        if kind == "bank_card":
            details = {**TEST_CARD, **(card or {})}
            method.update(card=details, title=f"Bank card *{details['last4']}")
            payment.authorization_details = {
                "rrn": str(secrets.randbelow(10**11) + 10**11),
                "auth_code": f"{secrets.randbelow(10**6):06d}",
                "three_d_secure": {"applied": False}}
        payment.payment_method = method
        payment.paid = True
        if payment.capture:
            self._succeed(payment, now)
        else:
            payment.status = "waiting_for_capture"
            payment.expires_at = now + self.capture_ttl
            self.notify("payment.waiting_for_capture", payment.to_api())
        return payment

    def user_cancel(self, payment_id: str, reason: str | None = None) -> Payment:
        """The payment fails or expires on YooKassa's side (not the merchant's cancel)."""
        payment = self.payment(payment_id)
        if payment.status not in ("pending", "waiting_for_capture"):
            raise invalid(f"Payment is already {payment.status}", "payment_id")
        default = "expired_on_capture" if payment.paid else "expired_on_confirmation"
        reason = reason or default
        if reason not in CANCEL_PARTIES:
            raise invalid(f"Unknown cancellation reason {reason!r}", "reason")
        self._cancel(payment, reason)
        return payment

    def sweep(self, now: float) -> None:
        """Cancel payments left pending too long and authorisations never captured."""
        for payment in list(self.payments.values()):
            if (payment.status == "pending" and self.pending_ttl is not None
                    and now >= payment.created_at + self.pending_ttl):
                self._cancel(payment, "expired_on_confirmation")
            elif (payment.status == "waiting_for_capture" and payment.expires_at is not None
                  and now >= payment.expires_at):
                self._cancel(payment, "expired_on_capture")

    # ------------------------------------------------------------ transitions

    def _succeed(self, payment: Payment, now: float) -> None:
        payment.status = "succeeded"
        payment.paid = True
        payment.captured_at = now
        payment.expires_at = None
        payment.income = (payment.amount * (1 - FEE_RATE)).quantize(CENT)
        self.notify("payment.succeeded", payment.to_api())

    def _cancel(self, payment: Payment, reason: str) -> None:
        payment.status = "canceled"
        payment.paid = False
        payment.expires_at = None
        payment.cancellation = {"party": CANCEL_PARTIES[reason], "reason": reason}
        self.notify("payment.canceled", payment.to_api())
