"""Crypto Pay API (Crypto Bot) client and the signature of its webhook updates.

Calls are POSTs to `{api_url}/{method}` with a JSON body and the `Crypto-Pay-API-Token`
header; answers are `{"ok": true, "result": ...}` or `{"ok": false, "error": {...}}`.
Invoices are priced in fiat (`currency_type=fiat`) and paid in any accepted asset; our payment
id travels in `payload`. Crypto Pay has no idempotence keys: a creation retried after a
timeout may leave an extra active invoice whose link nobody ever saw; it simply expires.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from habitbot.http_sessions import Response
from habitbot.payments import money
from habitbot.payments.http import ProviderHttp
from habitbot.payments.origin import Origin, from_payload

PROVIDER = "cryptobot"
SIGNATURE_HEADER = "crypto-pay-api-signature"
DEFAULT_ACCEPTED_ASSETS = "USDT,TON,BTC,ETH,LTC,BNB,TRX,USDC"
DEFAULT_EXPIRES_IN = 3600
PAID_PAGE = 1000  # getInvoices' largest count
FIATS = frozenset({"RUB", "USD", "EUR"})


class MalformedInvoice(ValueError):
    """An invoice object (API answer or update payload) we cannot read."""


@dataclass(frozen=True)
class Invoice:
    invoice_id: int
    status: str  # active | paid | expired
    amount_minor: int
    currency: str  # the fiat code for fiat invoices, the asset for crypto ones
    currency_type: str
    payload: str | None
    pay_url: str | None
    raw: dict[str, Any]

    @property
    def origin(self) -> Origin:
        """What our payload says the invoice is (see habitbot.payments.origin)."""
        return from_payload(self.payload)

    @property
    def our_payment_id(self) -> int | None:
        return self.origin.payment_id


def parse_invoice(data: Any) -> Invoice:
    try:
        currency_type = str(data.get("currency_type") or "crypto")
        currency = str(data["fiat"] if currency_type == "fiat" else data["asset"])
        payload = data.get("payload")
        return Invoice(
            invoice_id=int(data["invoice_id"]), status=str(data["status"]),
            amount_minor=money.to_minor(data["amount"], currency), currency=currency,
            currency_type=currency_type, payload=None if payload is None else str(payload),
            pay_url=data.get("bot_invoice_url") or data.get("pay_url"), raw=data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedInvoice(f"unreadable invoice: {type(exc).__name__}") from None


def signature(token: str, body: bytes) -> str:
    """Hex HMAC-SHA-256 of the raw body with the key SHA-256(app token)."""
    return hmac.new(hashlib.sha256(token.encode()).digest(), body, hashlib.sha256).hexdigest()


def signature_valid(token: str, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    return hmac.compare_digest(signature(token, body).encode(), header.strip().lower().encode())


def _error(response: Response) -> tuple[str | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.reason or "error"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        name = str(error.get("name") or "error")
        return name, name
    return None, response.reason or "error"


class CryptoBotClient:
    def __init__(self, api_url: str, token: str, http: ProviderHttp | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.http = http or ProviderHttp(PROVIDER)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, params: dict[str, Any]) -> Any:
        response = self.http.request(method, "POST", f"{self.api_url}/{method}", _error,
                                     json=params,
                                     headers={"Crypto-Pay-API-Token": self._token})
        try:
            body = response.json()
        except ValueError:
            raise MalformedInvoice(f"{method}: the answer is not JSON") from None
        if not isinstance(body, dict) or body.get("ok") is not True:
            raise MalformedInvoice(f"{method}: the answer is not ok")
        return body.get("result")

    def create_invoice(self, *, amount_minor: int, fiat: str, payload: str, description: str,
                       accepted_assets: str = DEFAULT_ACCEPTED_ASSETS,
                       expires_in: int = DEFAULT_EXPIRES_IN,
                       return_url: str | None = None) -> Invoice:
        params: dict[str, Any] = {
            "currency_type": "fiat", "fiat": fiat, "amount": money.to_text(amount_minor, fiat),
            "accepted_assets": accepted_assets, "payload": payload,
            "description": description[:1024], "expires_in": expires_in,
            "allow_anonymous": False}
        if return_url:
            params.update(paid_btn_name="openBot", paid_btn_url=return_url)
        return parse_invoice(self._call("createInvoice", params))

    def get_invoices(self, invoice_ids: list[int]) -> dict[int, Invoice]:
        """The invoices with these ids that exist (missing ids are simply absent)."""
        found: dict[int, Invoice] = {}
        for start in range(0, len(invoice_ids), 100):
            chunk = invoice_ids[start:start + 100]
            result = self._call("getInvoices", {
                "invoice_ids": ",".join(str(i) for i in chunk), "count": 1000})
            for item in (result or {}).get("items") or []:
                invoice = parse_invoice(item)
                found[invoice.invoice_id] = invoice
        return found

    def paid_invoices(self, created_after: datetime | None = None) -> list[Invoice]:
        """Paid invoices, newest first, page after page (reconciliation looks for ones we
        lack) until a page is short or reaches invoices created before `created_after`."""
        found: list[Invoice] = []
        offset = 0
        while True:
            result = self._call("getInvoices", {"status": "paid", "count": PAID_PAGE,
                                                "offset": offset})
            page = [parse_invoice(item) for item in (result or {}).get("items") or []]
            found.extend(page)
            if len(page) < PAID_PAGE or (created_after is not None
                                          and _created_before(page[-1], created_after)):
                return found
            offset += PAID_PAGE


def _created_before(invoice: Invoice, moment: datetime) -> bool:
    raw = invoice.raw.get("created_at")
    try:
        created = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return False
    return created.tzinfo is not None and created < moment
