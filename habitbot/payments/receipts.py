"""54-FZ receipts for YooKassa payments, and the e-mail address they are sent to.

With `YOOKASSA_RECEIPTS` on, every YooKassa payment carries a `receipt` object: YooKassa (with
"Чеки от ЮKassa" or the shop's online cash register) refuses a payment without one. The receipt
has one item, the payment itself: a premium plan is a service paid in full; a balance top-up is
an advance (a "зачёт аванса" receipt for premium later bought from the balance is not sent).

The buyer's e-mail is personal data: it is stored on the user, sent to YooKassa inside the
receipt and shown to its owner; it is never logged.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError

from habitbot.models import User
from habitbot.models.users import RECEIPT_EMAIL_MAX
from habitbot.payments import money
from habitbot.payments.yookassa import DESCRIPTION_LIMIT

# (payment_mode, payment_subject) per payment type, as YooKassa names 54-FZ tags 1214/1212.
ITEM_KINDS = {
    "subscription": ("full_payment", "service"),
    "balance_topup": ("advance", "payment"),
}
QUANTITY = "1.00"

_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL_RE = re.compile(rf"^(?P<local>{_LOCAL})@(?P<domain>(?:{_LABEL}\.)+[A-Za-z]{{2,63}})$")
LOCAL_PART_MAX = 64


class InvalidEmail(ValueError):
    """Not an address a receipt can be sent to. The message never holds the address."""


class EmailNotSaved(Exception):
    """The database did not take the address; the message never holds it."""


def build_receipt(*, email: str, description: str, amount_minor: int, currency: str,
                  payment_type: str, vat_code: int,
                  tax_system_code: int | None = None) -> dict[str, Any]:
    """The `receipt` of a YooKassa payment: one item worth the whole amount.

    ValueError for a payment type that has no receipt item kind.
    """
    if payment_type not in ITEM_KINDS:
        raise ValueError(f"no receipt item for payment type {payment_type!r}")
    payment_mode, payment_subject = ITEM_KINDS[payment_type]
    receipt: dict[str, Any] = {
        "customer": {"email": email},
        "items": [{
            "description": description[:DESCRIPTION_LIMIT],
            "quantity": QUANTITY,
            "amount": {"value": money.to_text(amount_minor, currency), "currency": currency},
            "vat_code": vat_code,
            "payment_mode": payment_mode,
            "payment_subject": payment_subject,
        }],
    }
    if tax_system_code is not None:
        receipt["tax_system_code"] = tax_system_code
    return receipt


def clean_email(raw: str | None) -> str:
    """A plain address like name@example.com (ASCII, at most 254 characters), with the domain
    in lower case; InvalidEmail otherwise."""
    text = (raw or "").strip()
    if not text:
        raise InvalidEmail("empty")
    if len(text) > RECEIPT_EMAIL_MAX:
        raise InvalidEmail("too long")
    match = _EMAIL_RE.match(text)
    if match is None or len(match["local"]) > LOCAL_PART_MAX:
        raise InvalidEmail("not an e-mail address")
    return f"{match['local']}@{match['domain'].lower()}"


def stored_email(engine: Engine, user_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(User.receipt_email).where(User.id == user_id)).scalar()


def store_email(engine: Engine, user_id: int, raw: str | None) -> str:
    """Validate (see `clean_email`) and save the address of the user's receipts; returns it
    as stored. InvalidEmail and EmailNotSaved change nothing."""
    email = clean_email(raw)
    try:
        with engine.begin() as conn:
            conn.execute(update(User).where(User.id == user_id).values(receipt_email=email))
    except SQLAlchemyError as exc:
        # The driver's message carries the statement's parameters: the address itself.
        raise EmailNotSaved(type(exc).__name__) from None
    return email
