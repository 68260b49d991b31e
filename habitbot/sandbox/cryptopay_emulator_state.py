"""Invoices of the Crypto Pay emulator: validation, payment, expiry, and their wire shape.

Parameters arrive as the API takes them (query string, JSON or form fields, so numbers and flags
may be strings); refusals are :class:`CryptoPayError` with Crypto Pay's upper-case names
(``{"ok": false, "error": {"code": 400, "name": "EXPIRES_IN_INVALID"}}``). Invoices look like
the ``invoice_paid`` samples in ``shared/samples``: amounts are decimal strings, times look like
``2025-08-23T09:36:31.568Z``. Exchange rates are fixed (see ``USD_PRICE`` / ``FIAT_PER_USD``) and
the fee is 3 %, so paid amounts are predictable in tests. The caller holds the emulator's lock.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

USD_PRICE = {"USDT": Decimal("1"), "USDC": Decimal("1"), "TON": Decimal("3.2"),
             "BTC": Decimal("65000"), "ETH": Decimal("3200"), "LTC": Decimal("80"),
             "BNB": Decimal("600"), "TRX": Decimal("0.12")}
ASSETS = tuple(USD_PRICE)
FIAT_PER_USD = {"USD": "1", "EUR": "0.92", "RUB": "80.5", "BYN": "3.27", "UAH": "41.5",
                "GBP": "0.79", "CNY": "7.2", "KZT": "480", "UZS": "12700", "GEL": "2.7",
                "TRY": "34", "AMD": "390", "THB": "35", "INR": "84", "BRL": "5.6",
                "IDR": "15800", "AZN": "1.7", "AED": "3.67", "PLN": "3.95", "ILS": "3.7"}
FIATS = tuple(FIAT_PER_USD)
PAID_BUTTONS = ("viewItem", "openChannel", "openBot", "callback")
FEE_RATE = Decimal("0.03")
MAX_EXPIRES_IN = 2_678_400
STATUSES = ("active", "paid", "expired")


class CryptoPayError(Exception):
    """An API refusal; ``code`` is both the HTTP status and ``error.code``."""

    def __init__(self, code: int, name: str) -> None:
        super().__init__(name)
        self.code = code
        self.name = name

    def envelope(self) -> dict[str, Any]:
        return {"ok": False, "error": {"code": self.code, "name": self.name}}


def bad(name: str) -> CryptoPayError:
    return CryptoPayError(400, name)


def iso(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def decimal_text(value: Decimal) -> str:
    """``Decimal("100.00")`` → ``"100"``, ``Decimal("1.50")`` → ``"1.5"``, never exponents."""
    return format(value.normalize(), "f")


def _text(params: dict[str, Any], name: str, error: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise bad(error)
    return str(value)


def _flag(params: dict[str, Any], name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1"):
        return True
    if str(value).lower() in ("false", "0"):
        return False
    raise bad(f"{name.upper()}_INVALID")


def _int(params: dict[str, Any], name: str, default: int | None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise bad(f"{name.upper()}_INVALID")
    try:
        return int(str(value))
    except ValueError:
        raise bad(f"{name.upper()}_INVALID") from None


def _assets(raw: Any) -> list[str]:
    """``accepted_assets`` is a comma-separated string; a JSON array makes the real API fail
    with 500 APP_ERROR, and so does this emulator."""
    if isinstance(raw, list):
        raise CryptoPayError(500, "APP_ERROR")
    if not isinstance(raw, str):
        raise bad("ACCEPTED_ASSETS_INVALID")
    assets = [part.strip() for part in raw.split(",") if part.strip()]
    if not assets:
        raise bad("ACCEPTED_ASSETS_INVALID")
    for asset in assets:
        if asset not in USD_PRICE:
            raise bad("UNSUPPORTED_ASSET")
    return assets


@dataclass
class Invoice:
    invoice_id: int
    hash: str
    app_token: str
    currency_type: str
    amount: Decimal
    created_at: float
    urls: dict[str, str]
    asset: str | None = None
    fiat: str | None = None
    accepted_assets: list[str] | None = None
    description: str | None = None
    hidden_message: str | None = None
    payload: str | None = None
    paid_btn_name: str | None = None
    paid_btn_url: str | None = None
    allow_comments: bool = True
    allow_anonymous: bool = True
    expires_at: float | None = None
    status: str = "active"
    paid_asset: str | None = None
    paid_amount: Decimal | None = None
    paid_at: float | None = None
    paid_anonymously: bool = False
    comment: str | None = None
    deleted: bool = False

    @property
    def app_id(self) -> int:
        head = self.app_token.split(":", 1)[0]
        return int(head) if head.isdigit() else 0

    def expire_if_due(self, now: float) -> None:
        if self.status == "active" and self.expires_at is not None and now >= self.expires_at:
            self.status = "expired"

    def fee(self) -> Decimal:
        assert self.paid_amount is not None
        return (self.paid_amount * FEE_RATE).quantize(Decimal("1e-10"))

    def to_api(self, webhook: bool = False) -> dict[str, Any]:
        """The Invoice object; ``webhook`` adds the fields only update payloads carry."""
        data: dict[str, Any] = {"invoice_id": self.invoice_id, "hash": self.hash,
                                "currency_type": self.currency_type}
        if self.currency_type == "crypto":
            data["asset"] = self.asset
        else:
            data["fiat"] = self.fiat
        data["amount"] = decimal_text(self.amount)
        paid = self.status == "paid" and self.paid_asset is not None
        if paid:
            assert self.paid_amount is not None and self.paid_asset is not None
            data["paid_asset"] = self.paid_asset
            data["paid_amount"] = decimal_text(self.paid_amount)
            if self.currency_type == "fiat" and self.fiat:
                rate = USD_PRICE[self.paid_asset] * Decimal(FIAT_PER_USD[self.fiat])
                data["paid_fiat_rate"] = decimal_text(rate)
        if self.accepted_assets is not None:
            data["accepted_assets"] = list(self.accepted_assets)
        if paid:
            fee = self.fee()
            data["fee_asset"] = self.paid_asset
            data["fee_amount"] = decimal_text(fee)
            if webhook:
                data["fee"] = decimal_text(fee)
                usd = (fee * USD_PRICE[str(self.paid_asset)]).quantize(Decimal("1e-8"))
                data["fee_in_usd"] = decimal_text(usd)
        data["pay_url"] = self.urls["bot_invoice_url"]
        data.update(self.urls)
        if self.description is not None:
            data["description"] = self.description
        data["status"] = self.status
        data["created_at"] = iso(self.created_at)
        data["allow_comments"] = self.allow_comments
        data["allow_anonymous"] = self.allow_anonymous
        if self.expires_at is not None:
            data["expiration_date"] = iso(self.expires_at)
        if paid:
            usd_rate = decimal_text(USD_PRICE[str(self.paid_asset)])
            data["paid_usd_rate"] = usd_rate
            if webhook:
                data["usd_rate"] = usd_rate
            assert self.paid_at is not None
            data["paid_at"] = iso(self.paid_at)
            data["paid_anonymously"] = self.paid_anonymously
            if self.comment:
                data["comment"] = self.comment
        for name in ("hidden_message", "payload", "paid_btn_name", "paid_btn_url"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data


class InvoiceBook:
    """Invoices of every app the emulator serves, by id."""

    def __init__(self) -> None:
        self.invoices: dict[int, Invoice] = {}
        self.next_id = 100_001

    def clear(self) -> None:
        self.invoices.clear()
        self.next_id = 100_001

    def create(self, token: str, params: dict[str, Any], now: float,
               urls_for: Callable[[str], dict[str, str]]) -> Invoice:
        """Validate ``createInvoice`` parameters and store the new active invoice."""
        currency_type = _text(params, "currency_type", "CURRENCY_TYPE_INVALID") or "crypto"
        if currency_type not in ("crypto", "fiat"):
            raise bad("CURRENCY_TYPE_INVALID")
        asset = fiat = None
        accepted = None
        if currency_type == "crypto":
            asset = _text(params, "asset", "UNSUPPORTED_ASSET")
            if asset is None:
                raise bad("ASSET_REQUIRED")
            if asset not in USD_PRICE:
                raise bad("UNSUPPORTED_ASSET")
        else:
            fiat = _text(params, "fiat", "UNSUPPORTED_FIAT")
            if fiat is None:
                raise bad("FIAT_REQUIRED")
            if fiat not in FIAT_PER_USD:
                raise bad("UNSUPPORTED_FIAT")
            raw = params.get("accepted_assets")
            accepted = list(ASSETS) if raw in (None, "") else _assets(raw)
        amount = self._amount(params)
        description = _text(params, "description", "DESCRIPTION_INVALID")
        if description is not None and len(description) > 1024:
            raise bad("DESCRIPTION_TOO_LONG")
        hidden = _text(params, "hidden_message", "HIDDEN_MESSAGE_INVALID")
        if hidden is not None and len(hidden) > 2048:
            raise bad("HIDDEN_MESSAGE_TOO_LONG")
        payload = _text(params, "payload", "PAYLOAD_INVALID")
        if payload is not None and len(payload.encode("utf-8")) > 4096:
            raise bad("PAYLOAD_TOO_LONG")
        button, button_url = self._button(params)
        expires_in = _int(params, "expires_in", None)
        if expires_in is not None and not 1 <= expires_in <= MAX_EXPIRES_IN:
            raise bad("EXPIRES_IN_INVALID")
        invoice_hash = "IV" + "".join(secrets.choice(string.ascii_letters + string.digits)
                                      for _ in range(10))
        invoice = Invoice(
            self.next_id, invoice_hash, token, currency_type, amount, now,
            urls_for(invoice_hash), asset, fiat, accepted, description, hidden, payload,
            button, button_url, _flag(params, "allow_comments", True),
            _flag(params, "allow_anonymous", True),
            None if expires_in is None else now + expires_in)
        self.next_id += 1
        self.invoices[invoice.invoice_id] = invoice
        return invoice

    @staticmethod
    def _amount(params: dict[str, Any]) -> Decimal:
        raw = _text(params, "amount", "AMOUNT_INVALID")
        if raw is None:
            raise bad("AMOUNT_REQUIRED")
        try:
            amount = Decimal(raw.strip())
        except InvalidOperation:
            raise bad("AMOUNT_INVALID") from None
        if not amount.is_finite() or amount <= 0 or amount >= Decimal("1e12"):
            raise bad("AMOUNT_INVALID")
        return amount

    @staticmethod
    def _button(params: dict[str, Any]) -> tuple[str | None, str | None]:
        name = _text(params, "paid_btn_name", "PAID_BTN_NAME_INVALID")
        url = _text(params, "paid_btn_url", "PAID_BTN_URL_INVALID")
        if name is None:
            return None, url
        if name not in PAID_BUTTONS:
            raise bad("PAID_BTN_NAME_INVALID")
        if url is None:
            raise bad("PAID_BTN_URL_REQUIRED")
        if not url.startswith(("https://", "http://")):
            raise bad("PAID_BTN_URL_INVALID")
        return name, url

    def find(self, token: str | None, invoice_id: int, now: float) -> Invoice | None:
        invoice = self.invoices.get(invoice_id)
        if invoice is None or invoice.deleted or token not in (None, invoice.app_token):
            return None
        invoice.expire_if_due(now)
        return invoice

    def by_hash(self, invoice_hash: str, now: float) -> Invoice | None:
        for invoice in self.invoices.values():
            if invoice.hash == invoice_hash and not invoice.deleted:
                invoice.expire_if_due(now)
                return invoice
        return None

    def select(self, token: str, params: dict[str, Any], now: float) -> list[Invoice]:
        """``getInvoices``: filters, then newest first, then ``offset``/``count``."""
        ids = self._ids(params.get("invoice_ids"))
        status = _text(params, "status", "STATUS_INVALID")
        if status is not None and status not in STATUSES:
            raise bad("STATUS_INVALID")
        asset = _text(params, "asset", "UNSUPPORTED_ASSET")
        fiat = _text(params, "fiat", "UNSUPPORTED_FIAT")
        offset = _int(params, "offset", 0) or 0
        count = _int(params, "count", 100)
        if offset < 0:
            raise bad("OFFSET_INVALID")
        if count is None or not 1 <= count <= 1000:
            raise bad("COUNT_INVALID")
        chosen = []
        for invoice in sorted(self.invoices.values(), key=lambda i: -i.invoice_id):
            if invoice.deleted or invoice.app_token != token:
                continue
            invoice.expire_if_due(now)
            if ((ids is None or invoice.invoice_id in ids)
                    and status in (None, invoice.status)
                    and asset in (None, invoice.asset) and fiat in (None, invoice.fiat)):
                chosen.append(invoice)
        return chosen[offset:offset + count]

    @staticmethod
    def _ids(raw: Any) -> set[int] | None:
        if raw is None or raw == "":
            return None
        parts: Iterable[Any] = raw if isinstance(raw, list) else str(raw).split(",")
        try:
            return {int(str(part).strip()) for part in parts if str(part).strip()}
        except ValueError:
            raise bad("INVOICE_IDS_INVALID") from None

    def delete(self, token: str, params: dict[str, Any], now: float) -> bool:
        invoice_id = _int(params, "invoice_id", None)
        if invoice_id is None:
            raise bad("INVOICE_ID_REQUIRED")
        invoice = self.find(token, invoice_id, now)
        if invoice is None:
            raise bad("INVOICE_NOT_FOUND")
        invoice.deleted = True
        return True

    def pay(self, invoice: Invoice, now: float, asset: str | None = None,
            comment: str | None = None, anonymous: bool = False) -> Invoice:
        """The payer pays: status paid, paid_asset / paid_amount at the fixed rates."""
        invoice.expire_if_due(now)
        if invoice.status != "active":
            raise ValueError(f"invoice {invoice.invoice_id} is {invoice.status}")
        if invoice.currency_type == "crypto":
            assert invoice.asset is not None
            if asset not in (None, "", invoice.asset):
                raise ValueError(f"invoice {invoice.invoice_id} is payable in {invoice.asset}")
            invoice.paid_asset, invoice.paid_amount = invoice.asset, invoice.amount
        else:
            accepted = invoice.accepted_assets or list(ASSETS)
            chosen = asset or accepted[0]
            if chosen not in accepted:
                raise ValueError(f"{chosen} is not accepted: {', '.join(accepted)}")
            assert invoice.fiat is not None
            usd = invoice.amount / Decimal(FIAT_PER_USD[invoice.fiat])
            invoice.paid_asset = chosen
            invoice.paid_amount = (usd / USD_PRICE[chosen]).quantize(Decimal("1e-8"))
        invoice.status = "paid"
        invoice.paid_at = now
        invoice.paid_anonymously = bool(anonymous and invoice.allow_anonymous)
        invoice.comment = comment if comment and invoice.allow_comments else None
        return invoice

    def balance(self, token: str) -> list[dict[str, str]]:
        totals = dict.fromkeys(ASSETS, Decimal(0))
        for invoice in self.invoices.values():
            if (invoice.app_token == token and invoice.status == "paid"
                    and invoice.paid_asset and invoice.paid_amount is not None):
                totals[invoice.paid_asset] += invoice.paid_amount - invoice.fee()
        return [{"currency_code": asset, "available": decimal_text(total), "onhold": "0"}
                for asset, total in totals.items()]


def exchange_rates() -> list[dict[str, Any]]:
    return [{"is_valid": True, "is_crypto": True, "is_fiat": False, "source": asset,
             "target": fiat, "rate": decimal_text(price * Decimal(per_usd))}
            for asset, price in USD_PRICE.items() for fiat, per_usd in FIAT_PER_USD.items()]
