"""The wire side of the YooKassa emulator: ``/v3/...`` like api.yookassa.ru, and the pay page.

Every ``/v3`` call passes, in order: injected faults (``before``), HTTP Basic auth
(shop id : secret key, else 401 ``invalid_credentials``), for POSTs the ``Idempotence-Key`` rules
(required, at most 64 characters; the same key with the same endpoint and body within the TTL
replays the first answer, with anything else it is 400 "Idempotence key duplicated"), the
operation itself under the emulator's lock, then ``after`` faults (processed, answer lost).
``GET /pay/<payment_id>`` is the confirmation page the payer opens; its buttons post back to it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from habitbot.sandbox.yookassa_emulator_state import YooKassaError, invalid

if TYPE_CHECKING:
    from habitbot.sandbox.yookassa_emulator import YooKassaEmulator

API_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(pattern), name) for method, pattern, name in [
        ("POST", r"^/v3/payments$", "create_payment"),
        ("GET", r"^/v3/payments$", "list_payments"),
        ("GET", r"^/v3/payments/([\w-]+)$", "get_payment"),
        ("POST", r"^/v3/payments/([\w-]+)/capture$", "capture_payment"),
        ("POST", r"^/v3/payments/([\w-]+)/cancel$", "cancel_payment"),
        ("POST", r"^/v3/refunds$", "create_refund"),
        ("GET", r"^/v3/refunds$", "list_refunds"),
        ("GET", r"^/v3/refunds/([\w-]+)$", "get_refund"),
    ]
]
ENDPOINTS = tuple(name for _, _, name in API_ROUTES)
PAY_PAGE = re.compile(r"^/pay/([\w-]+)$")
MAX_KEY_LENGTH = 64


@dataclass
class StoredAnswer:
    fingerprint: str
    status: int
    body: bytes
    stored_at: float


class IdempotenceCache:
    """First answers by ``Idempotence-Key``, kept for ``ttl`` seconds (24 h at YooKassa)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._answers: dict[str, StoredAnswer] = {}

    def lookup(self, key: str, fingerprint: str, now: float) -> StoredAnswer | None:
        answer = self._answers.get(key)
        if answer is None or now - answer.stored_at >= self.ttl:
            return None
        if answer.fingerprint != fingerprint:
            raise invalid("Idempotence key duplicated", "Idempotence-Key")
        return answer

    def store(self, key: str, fingerprint: str, status: int, body: bytes, now: float) -> None:
        self._answers[key] = StoredAnswer(fingerprint, status, body, now)

    def clear(self) -> None:
        self._answers.clear()


def error_response(exc: YooKassaError) -> HttpResponse:
    return json_response(exc.status, exc.body())


def fault_response(fault: Fault) -> HttpResponse:
    """What an API call hit by an injected fault answers (or acts out, for timeout/outage)."""
    if fault.mode in ("timeout", "outage"):
        return HttpResponse(0, fault=fault)
    if fault.mode == "429":
        response = error_response(YooKassaError(
            429, "too_many_requests", "Too many requests. Try again later"))
        response.headers["Retry-After"] = str(fault.retry_after)
        return response
    if fault.status in (502, 503, 504):
        return proxy_error_page(fault.status)
    return error_response(YooKassaError(
        fault.status, "internal_server_error",
        "Internal server error. The result of the request is unknown: repeat it with the same "
        "Idempotence-Key"))


class YooKassaApi:
    """Turns HTTP requests into ledger operations and YooKassa-shaped answers."""

    def __init__(self, emulator: YooKassaEmulator, idempotence_ttl: float) -> None:
        self.emulator = emulator
        self.idempotence = IdempotenceCache(idempotence_ttl)

    def handle(self, request: HttpRequest) -> HttpResponse:
        path = request.path.rstrip("/") or "/"
        page = PAY_PAGE.match(path)
        if page is not None:
            return self.pay_page(page.group(1), request)
        if not path.startswith("/v3/"):
            return html_response(404, render_page("Not found", [("path", path)]))
        endpoint, groups, allowed = _match(request.method, path)
        if endpoint is None:
            if allowed:
                return HttpResponse(405, b"", headers={"Allow": ", ".join(allowed)})
            return error_response(YooKassaError(404, "not_found", "Not found"))
        key = request.header("Idempotence-Key")
        entry = self.emulator.requests.record(
            endpoint=endpoint, method=request.method, path=path, client_ip=request.client_ip,
            idempotence_key=key, object_id=groups[0] if groups else None)
        response = self._process(endpoint, groups, request, key)
        self.emulator.requests.update(entry["id"], status=response.status or None,
                                      fault=response.fault.mode if response.fault else None)
        return response

    def _process(self, endpoint: str, groups: tuple[str, ...], request: HttpRequest,
                 key: str | None) -> HttpResponse:
        emulator = self.emulator
        fault = emulator.fault_for(endpoint, after=False)
        if fault is not None:
            return fault_response(fault)
        if not self._authorized(request.header("Authorization")):
            return error_response(YooKassaError(401, "invalid_credentials",
                                                "Basic authentication failed"))
        try:
            if request.method == "POST":
                response = self._post(endpoint, groups, request, key)
            else:
                with emulator.lock:
                    response = self._execute(endpoint, groups, {}, request.query)
        except YooKassaError as exc:
            response = error_response(exc)
        fault = emulator.fault_for(endpoint, after=True)
        return fault_response(fault) if fault is not None else response

    def _post(self, endpoint: str, groups: tuple[str, ...], request: HttpRequest,
              key: str | None) -> HttpResponse:
        if request.body.strip() and request.content_type != "application/json":
            return HttpResponse(415, b"")
        if not key:
            raise invalid("Idempotence key is empty", "Idempotence-Key")
        if len(key) > MAX_KEY_LENGTH:
            raise invalid(f"Idempotence key is longer than {MAX_KEY_LENGTH} characters",
                          "Idempotence-Key")
        body = _json_body(request.body)
        fingerprint = f"{request.path}\n{json.dumps(body, sort_keys=True)}"
        emulator = self.emulator
        with emulator.lock:
            now = emulator.now()
            stored = self.idempotence.lookup(key, fingerprint, now)
            if stored is not None:
                return HttpResponse(stored.status, stored.body)
            response = self._execute(endpoint, groups, body, request.query)
            if response.status < 500:
                self.idempotence.store(key, fingerprint, response.status, response.body, now)
            return response

    def _authorized(self, header: str | None) -> bool:
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        shop_id, _, secret = decoded.partition(":")
        emulator = self.emulator
        return (hmac.compare_digest(shop_id.encode(), emulator.shop_id.encode())
                and hmac.compare_digest(secret.encode(), emulator.secret_key.encode()))

    def _execute(self, endpoint: str, groups: tuple[str, ...], body: dict[str, Any],
                 query: dict[str, str]) -> HttpResponse:
        """Run one operation (caller holds the emulator lock); YooKassaError becomes 4xx."""
        ledger = self.emulator.ledger
        now = self.emulator.now()
        ledger.sweep(now)
        target = groups[0] if groups else ""
        operations: dict[str, Callable[[], Any]] = {
            "create_payment": lambda: ledger.create_payment(
                body, now, self.emulator.pay_url).to_api(),
            "list_payments": lambda: ledger.list_payments(query),
            "get_payment": lambda: ledger.payment(target).to_api(),
            "capture_payment": lambda: ledger.capture(target, body, now).to_api(),
            "cancel_payment": lambda: ledger.cancel(target, now).to_api(),
            "create_refund": lambda: ledger.create_refund(body, now).to_api(),
            "list_refunds": lambda: ledger.list_refunds(query),
            "get_refund": lambda: ledger.refund(target).to_api(),
        }
        try:
            return json_response(200, operations[endpoint]())
        except YooKassaError as exc:
            return error_response(exc)

    # ------------------------------------------------------------ the payer's page

    def pay_page(self, payment_id: str, request: HttpRequest) -> HttpResponse:
        emulator = self.emulator
        message = None
        if request.method == "POST":
            action = form_fields(request).get("action")
            try:
                if action == "pay":
                    emulator.pay(payment_id)
                    message = "Payment confirmed."
                elif action == "cancel":
                    emulator.cancel(payment_id)
                    message = "Payment canceled."
                else:
                    message = "Unknown action."
            except ControlError as exc:
                message = exc.message
        elif request.method != "GET":
            return HttpResponse(405, b"", headers={"Allow": "GET, POST"})
        with emulator.lock:
            payment = emulator.ledger.payments.get(payment_id)
            data = payment.to_api() if payment else None
            return_url = payment.confirmation.get("return_url") if (
                payment and payment.confirmation) else None
        if data is None:
            return html_response(404, render_page("Payment not found", [("id", payment_id)]))
        amount = data["amount"]
        rows = [("Shop", emulator.shop_id), ("Payment", data["id"]),
                ("Amount", f"{amount['value']} {amount['currency']}"),
                ("Description", data.get("description") or ""), ("Status", data["status"])]
        if return_url and data["status"] != "pending":
            rows.append(("Back to the shop", return_url))
        buttons = [("pay", "Pay"), ("cancel", "Cancel")] if data["status"] == "pending" else []
        return html_response(200, render_page(
            "YooKassa (emulator): confirm the payment", rows, f"/pay/{payment_id}", buttons,
            message))


def _match(method: str, path: str) -> tuple[str | None, tuple[str, ...], list[str]]:
    allowed = []
    for route_method, pattern, name in API_ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        if route_method == method:
            return name, match.groups(), []
        allowed.append(route_method)
    return None, (), allowed


def _json_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise invalid("Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid("Request body must be a JSON object")
    return body
