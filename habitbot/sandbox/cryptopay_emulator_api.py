"""The wire side of the Crypto Pay emulator: ``/api/<method>`` like pay.crypt.bot, the pay page.

A call is GET or POST with parameters in the query string, a JSON body or a form body, and the
app token in ``Crypto-Pay-API-Token``. Answers are ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"code": N, "name": "..."}}`` with HTTP status N: 401 UNAUTHORIZED for
a wrong token, 405 METHOD_NOT_FOUND for an unknown method, 400 with a specific name for bad
parameters. Faults are checked before (and, with ``after``, after) the method runs.
``GET /pay/<hash>`` is the page behind ``bot_invoice_url`` and friends; its form pays.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from habitbot.sandbox.cryptopay_emulator_state import CryptoPayError, bad, exchange_rates
from habitbot.sandbox.payments_emulator_base import ControlError
from habitbot.sandbox.payments_emulator_faults import Fault
from habitbot.sandbox.payments_emulator_http import (
    HttpRequest,
    HttpResponse,
    form_fields,
    html_response,
    json_response,
    proxy_error_page,
    render_page,
)

if TYPE_CHECKING:
    from habitbot.sandbox.cryptopay_emulator import CryptoPayEmulator

METHODS = ("getMe", "createInvoice", "getInvoices", "deleteInvoice", "getBalance",
           "getExchangeRates")
METHOD_NAMES = {name.lower(): name for name in METHODS}
PAY_PAGE = re.compile(r"^/pay/(\w+)$")


def fault_response(fault: Fault) -> HttpResponse:
    if fault.mode in ("timeout", "outage"):
        return HttpResponse(0, fault=fault)
    if fault.mode == "429":
        response = json_response(429, CryptoPayError(429, "TOO_MANY_REQUESTS").envelope())
        response.headers["Retry-After"] = str(fault.retry_after)
        return response
    if fault.status in (502, 503, 504):
        return proxy_error_page(fault.status)
    return json_response(fault.status,
                         CryptoPayError(fault.status, "INTERNAL_SERVER_ERROR").envelope())


class CryptoPayApi:
    def __init__(self, emulator: CryptoPayEmulator) -> None:
        self.emulator = emulator

    def handle(self, request: HttpRequest) -> HttpResponse:
        path = request.path.rstrip("/") or "/"
        page = PAY_PAGE.match(path)
        if page is not None:
            return self.pay_page(page.group(1), request)
        if not path.startswith("/api/") or request.method not in ("GET", "POST"):
            return html_response(404, render_page("Not found", [("path", path)]))
        raw = path[len("/api/"):]
        method = METHOD_NAMES.get(raw.lower(), raw)
        token = request.header("Crypto-Pay-API-Token")
        entry = self.emulator.requests.record(
            endpoint=method, method=request.method, path=path, client_ip=request.client_ip,
            app_id=self.emulator.app_id(token))
        response = self._process(method, token, request, entry["id"])
        self.emulator.requests.update(entry["id"], status=response.status or None,
                                      fault=response.fault.mode if response.fault else None)
        return response

    def _process(self, method: str, token: str | None, request: HttpRequest,
                 entry_id: int) -> HttpResponse:
        emulator = self.emulator
        fault = emulator.fault_for(method, after=False)
        if fault is not None:
            return fault_response(fault)
        try:
            if token is None or token not in emulator.tokens:
                raise CryptoPayError(401, "UNAUTHORIZED")
            if method not in METHODS:
                raise CryptoPayError(405, "METHOD_NOT_FOUND")
            params = _params(request)
            if "invoice_ids" in params:  # the request log shows which invoices were asked
                emulator.requests.update(entry_id, invoice_ids=str(params["invoice_ids"]))
            with emulator.lock:
                result = self._execute(method, token, params)
            response = json_response(200, {"ok": True, "result": result})
        except CryptoPayError as exc:
            response = json_response(exc.code, exc.envelope())
        fault = emulator.fault_for(method, after=True)
        return fault_response(fault) if fault is not None else response

    def _execute(self, method: str, token: str, params: dict[str, Any]) -> Any:
        emulator = self.emulator
        book = emulator.book
        now = emulator.now()
        operations: dict[str, Callable[[], Any]] = {
            "getMe": lambda: {"app_id": emulator.app_id(token), "name": emulator.app_name,
                              "payment_processing_bot_username": emulator.bot_username},
            "createInvoice": lambda: book.create(token, params, now,
                                                 emulator.invoice_urls).to_api(),
            "getInvoices": lambda: {"items": [invoice.to_api() for invoice
                                              in book.select(token, params, now)]},
            "deleteInvoice": lambda: book.delete(token, params, now),
            "getBalance": lambda: book.balance(token),
            "getExchangeRates": exchange_rates,
        }
        return operations[method]()

    # ------------------------------------------------------------ the payer's page

    def pay_page(self, invoice_hash: str, request: HttpRequest) -> HttpResponse:
        emulator = self.emulator
        message = None
        if request.method == "POST":
            fields = form_fields(request)
            with emulator.lock:
                found = emulator.book.by_hash(invoice_hash, emulator.now())
            if found is not None and fields.get("action") == "pay":
                try:
                    emulator.pay(found.invoice_id, asset=fields.get("asset") or None,
                                 comment=fields.get("comment") or None)
                    message = "Invoice paid."
                except ControlError as exc:
                    message = exc.message
        elif request.method != "GET":
            return HttpResponse(405, b"", headers={"Allow": "GET, POST"})
        with emulator.lock:
            invoice = emulator.book.by_hash(invoice_hash, emulator.now())
            data = invoice.to_api() if invoice else None
        if data is None:
            return html_response(404, render_page("Invoice not found", [("hash", invoice_hash)]))
        price = f"{data['amount']} {data.get('asset') or data.get('fiat')}"
        rows = [("Invoice", str(data["invoice_id"])), ("Amount", price),
                ("Description", data.get("description") or ""), ("Status", data["status"])]
        if data["status"] == "paid":
            rows.append(("Paid", f"{data['paid_amount']} {data['paid_asset']}"))
            if data.get("hidden_message"):
                rows.append(("Message", data["hidden_message"]))
        extra = ""
        if data.get("accepted_assets"):
            options = "".join(f'<option value="{escape(a)}">{escape(a)}</option>'
                              for a in data["accepted_assets"])
            extra += f'<p>Pay with <select name="asset">{options}</select></p>'
        if data["allow_comments"]:
            extra += '<p>Comment <input name="comment" maxlength="1024"></p>'
        buttons = [("pay", "Pay")] if data["status"] == "active" else []
        return html_response(200, render_page(
            "Crypto Bot (emulator): pay the invoice", rows, f"/pay/{invoice_hash}", buttons,
            message, extra))


def _params(request: HttpRequest) -> dict[str, Any]:
    """Query string merged with a JSON or form body."""
    params: dict[str, Any] = dict(request.query)
    body = request.body
    if not body.strip():
        return params
    kind = request.content_type
    if kind == "application/json":
        try:
            data = json.loads(body)
        except ValueError:
            raise bad("JSON_INVALID") from None
        if not isinstance(data, dict):
            raise bad("JSON_INVALID")
        params.update(data)
    elif kind == "application/x-www-form-urlencoded":
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    else:
        raise bad("CONTENT_TYPE_UNSUPPORTED")
    return params
