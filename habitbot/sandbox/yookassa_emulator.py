"""A local YooKassa (API v3) emulator for tests and the sandbox.

The app talks to it as to api.yookassa.ru, with ``YOOKASSA_API_URL={url}/v3``: Basic auth, the
``Idempotence-Key`` rules, payments (``capture`` true/false, capture, cancel), refunds (partial
too), YooKassa's error bodies. ``confirmation.confirmation_url`` points at ``{url}/pay/<id>``,
a tiny page whose Pay / Cancel buttons play the payer. Every status change POSTs a notification
``{"type": "notification", "event": ..., "object": ...}`` to the webhook URL and retries on
non-2xx answers and connection errors (``retry_delays``, a shortened version of YooKassa's 24 h
of retries). Notifications carry no signature, like YooKassa's: they come from 127.0.0.1 (or
``notification_source``, any 127.x.y.z on Linux), so an app trusting source IPs must list it.

Tests play the payer and inject failures through the JSON control API under ``/control/``
(client: ``habitbot.sandbox.payments_client.YooKassaControl``) or the Python methods here.

54-FZ receipts: a ``receipt`` sent with a payment is checked like YooKassa checks it (the
customer's email or phone, items whose amounts times quantities add up to the payment, a
``vat_code`` on each) and kept with the payment, which then reports ``receipt_registration``
``pending`` → ``succeeded`` once paid. The shop setting ``receipts_required`` (a shop with
"Чеки от ЮKassa" or its own online cash register; ``POST /control/settings``) refuses a
payment without a valid receipt with 400 ``invalid_request``, ``parameter: "receipt"``.

Run it standalone::

    python -m habitbot.sandbox.yookassa_emulator --port 8082 --shop-id 100500 \\
        --secret-key test_SANDBOX --webhook-url http://127.0.0.1:8080/webhooks/yookassa
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from habitbot.sandbox.payments_emulator_base import (
    ControlError,
    ControlRequest,
    EmulatorBase,
    control_int,
    serve_forever,
)
from habitbot.sandbox.payments_emulator_http import HttpRequest, HttpResponse
from habitbot.sandbox.yookassa_emulator_api import ENDPOINTS, YooKassaApi
from habitbot.sandbox.yookassa_emulator_receipts import ShopLedger
from habitbot.sandbox.yookassa_emulator_state import EVENTS, YooKassaError

DEFAULT_SHOP_ID = "100500"
DEFAULT_SECRET_KEY = "test_SANDBOX-secret-key"
NOTIFICATION_HEADERS = {"Content-Type": "application/json"}

__all__ = ["DEFAULT_SECRET_KEY", "DEFAULT_SHOP_ID", "ENDPOINTS", "EVENTS", "YooKassaEmulator",
           "main"]


class YooKassaEmulator(EmulatorBase):
    """The emulator server; ``start()`` serves it from daemon threads, ``stop()`` ends them.

    ``webhook_url`` receives notifications (settable later through the control API);
    ``retry_delays`` are the seconds between attempts after a failed one; ``events`` limits
    which notifications are sent (YooKassa sends only subscribed ones); ``pending_ttl`` and
    ``capture_ttl`` are how long a payment may stay pending / waiting_for_capture before it
    is canceled (``expired_on_confirmation`` / ``expired_on_capture``); ``public_url`` is the
    base of confirmation URLs when browsers reach the emulator at another address;
    ``receipts_required`` refuses payments without a valid 54-FZ receipt.
    """

    service = "yookassa-emulator"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        shop_id: str = DEFAULT_SHOP_ID,
        secret_key: str = DEFAULT_SECRET_KEY,
        *,
        webhook_url: str | None = None,
        retry_delays: Sequence[float] = (0.5, 1.0, 2.0),
        webhook_timeout: float = 5.0,
        notification_source: str | None = None,
        public_url: str | None = None,
        idempotence_ttl: float = 24 * 3600.0,
        pending_ttl: float | None = 3600.0,
        capture_ttl: float = 7 * 24 * 3600.0,
        events: Iterable[str] = EVENTS,
        fault_hold_max: float = 30.0,
        sweep_interval: float = 0.5,
        receipts_required: bool = False,
    ) -> None:
        self.shop_id = str(shop_id)
        self.secret_key = secret_key
        self.events = frozenset(events)
        self.ledger = ShopLedger(self.shop_id, self._notify, pending_ttl, capture_ttl,
                                 receipts_required)
        self.api = YooKassaApi(self, idempotence_ttl)
        super().__init__(host, port, webhook_url=webhook_url, retry_delays=retry_delays,
                         webhook_timeout=webhook_timeout, source_address=notification_source,
                         public_url=public_url, fault_hold_max=fault_hold_max,
                         sweep_interval=sweep_interval)

    def start(self) -> YooKassaEmulator:
        super().start()
        return self

    def __enter__(self) -> YooKassaEmulator:
        return self.start()

    @property
    def api_url(self) -> str:
        """What ``YOOKASSA_API_URL`` should be set to."""
        return f"{self.url}/v3"

    def pay_url(self, payment_id: str) -> str:
        return f"{self.base_url}/pay/{payment_id}"

    # ------------------------------------------------------------ plumbing

    def handle_api(self, request: HttpRequest) -> HttpResponse:
        return self.api.handle(request)

    def sweep(self) -> None:
        with self.lock:
            self.ledger.sweep(self.now())

    def reset_state(self) -> None:
        self.ledger.clear()
        self.api.idempotence.clear()

    def _notify(self, event: str, obj: dict[str, Any]) -> None:
        if event in self.events:
            self.send_notification(event, obj)

    def send_notification(self, event: str, obj: dict[str, Any], copies: int = 1,
                          concurrent: bool = False) -> list[dict[str, Any]]:
        """POST ``{"type": "notification", "event", "object"}`` (compact JSON, like YooKassa)."""
        body = json.dumps({"type": "notification", "event": event, "object": obj},
                          ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        payment_id = str(obj.get("payment_id") or obj.get("id"))
        tag = {"refund_id": obj.get("id")} if event.startswith("refund.") else {}
        return self.webhooks.submit(event, payment_id, body, NOTIFICATION_HEADERS, copies,
                                    concurrent, tag)

    def _locked(self, operation: Callable[[], Any]) -> Any:
        """Run a ledger operation under the lock; refusals become :class:`ControlError`."""
        with self.lock:
            try:
                self.ledger.sweep(self.now())
                return operation()
            except YooKassaError as exc:
                raise ControlError(exc.status if exc.status != 400 else 409,
                                   exc.description) from None

    # ------------------------------------------------------------ the payer and the dashboard

    def payments(self) -> list[dict[str, Any]]:
        with self.lock:
            return [payment.to_api() for payment in self.ledger.payments.values()]

    def payment(self, payment_id: str) -> dict[str, Any]:
        return self._locked(lambda: self.ledger.payment(payment_id).to_api())

    def refunds(self, payment_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [refund.to_api() for refund in self.ledger.refunds.values()
                    if payment_id in (None, refund.payment_id)]

    def pay(self, payment_id: str, card: dict[str, str] | None = None,
            method_type: str | None = None) -> dict[str, Any]:
        """The payer confirms the payment (succeeded, or waiting_for_capture)."""
        return self._locked(lambda: self.ledger.user_pay(
            payment_id, self.now(), card, method_type).to_api())

    def cancel(self, payment_id: str, reason: str | None = None) -> dict[str, Any]:
        """The payment is canceled on YooKassa's side (expiry, decline: ``reason``)."""
        return self._locked(lambda: self.ledger.user_cancel(payment_id, reason).to_api())

    def capture(self, payment_id: str, amount: str | float | None = None) -> dict[str, Any]:
        """The merchant captures in the dashboard (same effect as the API call)."""
        def run() -> Any:
            body = {} if amount is None else {"amount": self._money(payment_id, amount)}
            return self.ledger.capture(payment_id, body, self.now()).to_api()
        return self._locked(run)

    def refund(self, payment_id: str, amount: str | float | None = None,
               description: str | None = None) -> dict[str, Any]:
        """The merchant refunds in the dashboard; ``amount`` defaults to what is left."""
        def run() -> Any:
            payment = self.ledger.payment(payment_id)
            left = amount if amount is not None else str(payment.amount - payment.refunded)
            body: dict[str, Any] = {"payment_id": payment_id,
                                    "amount": self._money(payment_id, left)}
            if description is not None:
                body["description"] = description
            return self.ledger.create_refund(body, self.now()).to_api()
        return self._locked(run)

    def receipt(self, payment_id: str) -> dict[str, Any]:
        """The 54-FZ receipt sent with a payment (None when it had none)."""
        def run() -> Any:
            payment = self.ledger.payment(payment_id)
            stored = self.ledger.receipts.get(payment_id)
            return {"payment_id": payment_id,
                    "receipt_registration": payment.to_api().get("receipt_registration"),
                    "receipt": copy.deepcopy(stored)}
        return self._locked(run)

    def shop_settings(self) -> dict[str, Any]:
        return {"shop_id": self.shop_id, "api_url": self.api_url, "endpoints": list(ENDPOINTS),
                "events": sorted(self.events), "webhook": self.webhooks.settings(),
                "receipts_required": self.ledger.receipts_required}

    def configure_shop(self, receipts_required: bool | None = None) -> dict[str, Any]:
        """Change the shop's settings (kept across ``reset``); returns them all."""
        if receipts_required is not None:
            if not isinstance(receipts_required, bool):
                raise ControlError(400, "receipts_required must be true or false")
            with self.lock:
                self.ledger.receipts_required = receipts_required
        return self.shop_settings()

    def _money(self, payment_id: str, amount: str | float) -> dict[str, str]:
        return {"value": str(amount), "currency": self.ledger.payment(payment_id).currency}

    def resend(self, payment_id: str, event: str | None = None, copies: int = 1,
               concurrent: bool = False) -> list[dict[str, Any]]:
        """Send the last notification about a payment again, byte for byte (duplicates)."""
        delivery = self.webhooks.last(payment_id, event)
        if delivery is None:
            raise ControlError(404, f"no notification about {payment_id} to resend")
        return self.webhooks.submit(delivery.event, payment_id, delivery.body,
                                    delivery.headers, copies, concurrent, delivery.tag)

    def notify(self, payment_id: str, event: str, copies: int = 1, concurrent: bool = False,
               overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Send a fresh notification with the payment as it is now, whatever its status.

        ``overrides`` patch the object: a forged ``{"status": "succeeded"}`` on a pending
        payment is how to check that the app re-reads the payment before trusting it.
        """
        if event not in EVENTS:
            raise ControlError(400, f"event must be one of {', '.join(EVENTS)}")
        obj = {**self.payment(payment_id), **(overrides or {})}
        return self.send_notification(event, obj, copies, concurrent)

    # ------------------------------------------------------------ control API

    def control_routes(self) -> list[tuple[str, str, Callable[[ControlRequest], Any]]]:
        def target(r: ControlRequest) -> str:
            return r.groups[0]

        def burst(r: ControlRequest) -> dict[str, Any]:
            return {"copies": control_int(r.body.get("copies"), "copies", 1),
                    "concurrent": bool(r.body.get("concurrent", False))}

        return super().control_routes() + [
            ("GET", "payments", lambda r: {"payments": self.payments()}),
            ("GET", r"payments/([\w-]+)", lambda r: self.payment(target(r))),
            ("POST", r"payments/([\w-]+)/pay", lambda r: self.pay(
                target(r), **r.pick("card", "method_type"))),
            ("POST", r"payments/([\w-]+)/cancel", lambda r: self.cancel(
                target(r), r.body.get("reason"))),
            ("POST", r"payments/([\w-]+)/capture", lambda r: self.capture(
                target(r), r.body.get("amount"))),
            ("POST", r"payments/([\w-]+)/refund", lambda r: self.refund(
                target(r), **r.pick("amount", "description"))),
            ("POST", r"payments/([\w-]+)/resend", lambda r: {"deliveries": self.resend(
                target(r), r.body.get("event"), **burst(r))}),
            ("POST", r"payments/([\w-]+)/notify", lambda r: {"deliveries": self.notify(
                target(r), str(r.body.get("event")), overrides=r.body.get("overrides"),
                **burst(r))}),
            ("GET", r"payments/([\w-]+)/receipt", lambda r: self.receipt(target(r))),
            ("GET", "refunds", lambda r: {"refunds": self.refunds(r.query.get("payment_id"))}),
            ("GET", "settings", lambda r: self.shop_settings()),
            ("POST", "settings", self._control_settings),
        ]

    def _control_settings(self, request: ControlRequest) -> dict[str, Any]:
        unknown = sorted(set(request.body) - {"receipts_required"})
        if unknown:
            raise ControlError(400, f"unknown settings: {', '.join(unknown)}")
        return self.configure_shop(**request.pick("receipts_required"))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m habitbot.sandbox.yookassa_emulator",
                                     description="Local YooKassa API v3 emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--shop-id", default=DEFAULT_SHOP_ID)
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    parser.add_argument("--webhook-url", help="where notifications are POSTed")
    parser.add_argument("--retry-delays", default="0.5,1,2",
                        help="seconds between notification attempts, comma-separated")
    parser.add_argument("--notification-source", help="local address notifications leave from")
    parser.add_argument("--public-url", help="base of confirmation URLs seen by browsers")
    parser.add_argument("--receipts-required", action="store_true",
                        help="refuse payments without a valid 54-FZ receipt")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; returns the process exit code."""
    args = _parse_args(argv)
    emulator = YooKassaEmulator(
        args.host, args.port, args.shop_id, args.secret_key, webhook_url=args.webhook_url,
        retry_delays=[float(d) for d in args.retry_delays.split(",") if d.strip()],
        notification_source=args.notification_source, public_url=args.public_url,
        receipts_required=args.receipts_required)
    return serve_forever(emulator, f"YooKassa emulator (shop {args.shop_id})", args.log_level)


if __name__ == "__main__":
    sys.exit(main())
