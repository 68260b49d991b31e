"""54-FZ receipts at the YooKassa emulator: checked like YooKassa checks them, kept with the
payment, and required when the shop says so.

A receipt needs the customer's email or phone, 1..100 items, each with a description, a
quantity, a unit price (``amount``) in the payment's currency and a ``vat_code`` (1..12); the
prices times the quantities must add up to the payment amount. ``payment_mode``,
``payment_subject`` and ``tax_system_code`` are checked when present. A refusal is YooKassa's
400 ``invalid_request`` naming the parameter; a shop with ``receipts_required`` refuses a
payment without a receipt with ``parameter: "receipt"``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from habitbot.sandbox.yookassa_emulator_state import (
    CENT,
    Ledger,
    Notify,
    Payment,
    invalid,
    parse_amount,
)

RECEIPT_REFUSED = "Receipt is missing or illegal"
RECEIPT_ITEMS_MAX = 100
VAT_CODES = range(1, 13)
TAX_SYSTEM_CODES = range(1, 7)
PAYMENT_MODES = frozenset({"full_prepayment", "partial_prepayment", "advance", "full_payment",
                           "partial_payment", "credit", "credit_payment"})
PAYMENT_SUBJECTS = frozenset({
    "commodity", "excise", "job", "service", "gambling_bet", "gambling_prize", "lottery",
    "lottery_prize", "intellectual_activity", "payment", "agent_commission", "property_right",
    "non_operating_gain", "insurance_premium", "sales_tax", "resort_fee", "composite",
    "another", "fine", "tax", "lien", "cost", "pension_insurance_without_payouts",
    "pension_insurance_with_payouts", "health_insurance_without_payouts",
    "health_insurance_with_payouts", "health_insurance", "casino", "agent_withdrawals",
    "non_marked_excise", "marked_excise", "marked", "non_marked"})
QUANTITY_MAX = Decimal("99999.999")


def _code(raw: Any, allowed: range) -> int | None:
    """YooKassa takes codes as numbers or digit strings (``"vat_code": "2"``)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw)
    return raw if isinstance(raw, int) and raw in allowed else None


def _check_customer(receipt: dict[str, Any]) -> None:
    customer = receipt.get("customer")
    if customer is not None and not isinstance(customer, dict):
        raise invalid(RECEIPT_REFUSED, "receipt.customer")
    contacts = {**{k: receipt.get(k) for k in ("email", "phone")}, **(customer or {})}
    email, phone = contacts.get("email"), contacts.get("phone")
    if email is None and phone is None:
        raise invalid("Receipt needs the customer's email or phone", "receipt.customer")
    if email is not None and not (isinstance(email, str) and 3 <= len(email) <= 254
                                  and "@" in email.strip("@") and " " not in email):
        raise invalid("Invalid customer email", "receipt.customer.email")
    if phone is not None and not (isinstance(phone, str)
                                  and phone.lstrip("+").isdigit() and len(phone) <= 16):
        raise invalid("Invalid customer phone", "receipt.customer.phone")


def _quantity(raw: Any) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise invalid("Invalid item quantity", "receipt.items.quantity")
    try:
        quantity = Decimal(str(raw).strip())
    except InvalidOperation:
        raise invalid("Invalid item quantity", "receipt.items.quantity") from None
    exponent = quantity.as_tuple().exponent
    if (not quantity.is_finite() or quantity <= 0 or quantity > QUANTITY_MAX
            or (isinstance(exponent, int) and exponent < -3)):
        raise invalid("Invalid item quantity: a positive number with at most 3 decimal places "
                      "is expected", "receipt.items.quantity")
    return quantity


def _item_total(item: Any, currency: str) -> Decimal:
    """What one receipt line adds up to: its unit price (``amount``) times its quantity."""
    if not isinstance(item, dict):
        raise invalid(RECEIPT_REFUSED, "receipt.items")
    description = item.get("description")
    if not isinstance(description, str) or not 1 <= len(description) <= 128:
        raise invalid("Item description must be 1..128 characters long",
                      "receipt.items.description")
    quantity = _quantity(item.get("quantity"))
    price, item_currency = parse_amount(item.get("amount"), "receipt.items.amount")
    if item_currency != currency:
        raise invalid("Item currency must match the payment currency",
                      "receipt.items.amount.currency")
    if _code(item.get("vat_code"), VAT_CODES) is None:
        raise invalid("Missing or invalid vat_code", "receipt.items.vat_code")
    for name, allowed in (("payment_mode", PAYMENT_MODES),
                          ("payment_subject", PAYMENT_SUBJECTS)):
        if item.get(name) is not None and item.get(name) not in allowed:
            raise invalid(f"Invalid {name}", f"receipt.items.{name}")
    return (price * quantity).quantize(CENT, rounding=ROUND_HALF_UP)


def check_receipt(receipt: Any, amount: Decimal, currency: str) -> None:
    """Refuse (400 ``invalid_request``) a receipt YooKassa would not register for a payment
    of ``amount`` ``currency``."""
    if not isinstance(receipt, dict):
        raise invalid(RECEIPT_REFUSED, "receipt")
    items = receipt.get("items")
    if not isinstance(items, list) or not items:
        raise invalid("Receipt must contain at least one item", "receipt.items")
    if len(items) > RECEIPT_ITEMS_MAX:
        raise invalid(f"Receipt may contain at most {RECEIPT_ITEMS_MAX} items",
                      "receipt.items")
    _check_customer(receipt)
    total = sum((_item_total(item, currency) for item in items), Decimal("0.00"))
    if total != amount:
        raise invalid("The receipt items do not add up to the payment amount",
                      "receipt.items.amount")
    tax_system = receipt.get("tax_system_code")
    if tax_system is not None and _code(tax_system, TAX_SYSTEM_CODES) is None:
        raise invalid("Invalid tax_system_code", "receipt.tax_system_code")


class ShopLedger(Ledger):
    """The ledger of a shop that may send 54-FZ receipts (and may have to)."""

    def __init__(self, shop_id: str, notify: Notify, pending_ttl: float | None,
                 capture_ttl: float, receipts_required: bool = False) -> None:
        super().__init__(shop_id, notify, pending_ttl, capture_ttl)
        self.receipts_required = receipts_required
        self.receipts: dict[str, dict[str, Any]] = {}

    def clear(self) -> None:
        super().clear()
        self.receipts.clear()

    def create_payment(self, body: dict[str, Any], now: float,
                       pay_url: Callable[[str], str]) -> Payment:
        receipt = body.get("receipt")
        if receipt is None and self.receipts_required:
            raise invalid(RECEIPT_REFUSED, "receipt")
        if receipt is not None:
            check_receipt(receipt, *parse_amount(body.get("amount")))
        payment = super().create_payment(body, now, pay_url)
        if receipt is not None:
            self.receipts[payment.payment_id] = copy.deepcopy(receipt)
        return payment
