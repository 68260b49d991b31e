"""A local Crypto Pay API (Crypto Bot) emulator for tests and the sandbox.

The app talks to it as to pay.crypt.bot, with ``CRYPTOBOT_API_URL={url}/api``: ``getMe``,
``createInvoice`` (crypto or fiat), ``getInvoices``, ``deleteInvoice``, ``getBalance``,
``getExchangeRates``, Crypto Pay's envelopes and error names. ``bot_invoice_url``,
``mini_app_invoice_url`` and ``web_app_invoice_url`` point at ``{url}/pay/<hash>``, a tiny page
whose Pay button plays the payer. Paying POSTs an ``invoice_paid`` update
``{"update_id", "update_type", "request_date", "payload": <invoice>}`` to the webhook URL,
signed in ``crypto-pay-api-signature`` (hex HMAC-SHA-256 of the raw body, key SHA-256 of the
app's token), and retries non-2xx answers and connection errors (``retry_delays``). Invoices
past ``expires_in`` become ``expired`` (no update is sent for that, as in Crypto Pay).
Updates leave from 127.0.0.1 (or ``source_address``).

Tests play the payer through the JSON control API under ``/control/`` (client:
``habitbot.sandbox.payments_client.CryptoPayControl``) or the Python methods here.

Run it standalone::

    python -m habitbot.sandbox.cryptopay_emulator --port 8083 --token 12345:AAsandbox \\
        --webhook-url http://127.0.0.1:8080/webhooks/cryptobot
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from habitbot.sandbox.cryptopay_emulator_api import METHODS, CryptoPayApi
from habitbot.sandbox.cryptopay_emulator_state import Invoice, InvoiceBook, iso
from habitbot.sandbox.payments_emulator_base import (
    ControlError,
    ControlRequest,
    EmulatorBase,
    control_int,
    serve_forever,
)
from habitbot.sandbox.payments_emulator_http import HttpRequest, HttpResponse

DEFAULT_TOKEN = "12345:AAsandboxCryptoPayToken"
SIGNATURE_HEADER = "crypto-pay-api-signature"

__all__ = ["DEFAULT_TOKEN", "METHODS", "SIGNATURE_HEADER", "CryptoPayEmulator", "main",
           "sign"]


def sign(token: str, body: bytes) -> str:
    """The ``crypto-pay-api-signature`` of ``body`` for an app token."""
    return hmac.new(hashlib.sha256(token.encode()).digest(), body, hashlib.sha256).hexdigest()


class CryptoPayEmulator(EmulatorBase):
    """The emulator server; ``start()`` serves it from daemon threads, ``stop()`` ends them.

    ``tokens`` are the app tokens it accepts (the app id is the part before ``:``); one
    ``webhook_url`` receives the updates of every app, each signed with its own token.
    """

    service = "cryptopay-emulator"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Sequence[str] = (DEFAULT_TOKEN,),
        *,
        webhook_url: str | None = None,
        retry_delays: Sequence[float] = (0.5, 1.0, 2.0),
        webhook_timeout: float = 5.0,
        source_address: str | None = None,
        public_url: str | None = None,
        app_name: str = "HabitBot sandbox",
        bot_username: str = "CryptoBot",
        fault_hold_max: float = 30.0,
        sweep_interval: float = 0.5,
    ) -> None:
        if not tokens:
            raise ValueError("at least one app token is needed")
        self.tokens = tuple(tokens)
        self.app_name = app_name
        self.bot_username = bot_username
        self.book = InvoiceBook()
        self.next_update_id = 1
        self.api = CryptoPayApi(self)
        super().__init__(host, port, webhook_url=webhook_url, retry_delays=retry_delays,
                         webhook_timeout=webhook_timeout, source_address=source_address,
                         public_url=public_url, fault_hold_max=fault_hold_max,
                         sweep_interval=sweep_interval)

    def start(self) -> CryptoPayEmulator:
        super().start()
        return self

    def __enter__(self) -> CryptoPayEmulator:
        return self.start()

    @property
    def api_url(self) -> str:
        """What ``CRYPTOBOT_API_URL`` should be set to."""
        return f"{self.url}/api"

    @staticmethod
    def app_id(token: str | None) -> int | None:
        head = (token or "").split(":", 1)[0]
        return int(head) if head.isdigit() else None

    def invoice_urls(self, invoice_hash: str) -> dict[str, str]:
        page = f"{self.base_url}/pay/{invoice_hash}"
        return {"bot_invoice_url": page, "mini_app_invoice_url": f"{page}?mode=compact",
                "web_app_invoice_url": f"{page}?app=web"}

    # ------------------------------------------------------------ plumbing

    def handle_api(self, request: HttpRequest) -> HttpResponse:
        return self.api.handle(request)

    def sweep(self) -> None:
        with self.lock:
            now = self.now()
            for invoice in self.book.invoices.values():
                invoice.expire_if_due(now)

    def reset_state(self) -> None:
        self.book.clear()
        self.next_update_id = 1

    def _invoice(self, invoice_id: int | str) -> Invoice:
        """A stored invoice (caller holds the lock) or a 404 :class:`ControlError`."""
        invoice = self.book.find(None, control_int(invoice_id, "invoice_id"), self.now())
        if invoice is None:
            raise ControlError(404, f"no invoice {invoice_id}")
        return invoice

    def send_update(self, invoice: Invoice, copies: int = 1, concurrent: bool = False,
                    bad_signature: bool = False) -> list[dict[str, Any]]:
        """POST a new ``invoice_paid`` update (new ``update_id``) about ``invoice``."""
        with self.lock:
            update_id = self.next_update_id
            self.next_update_id += 1
            body = json.dumps({"update_id": update_id, "update_type": "invoice_paid",
                               "request_date": iso(self.now()),
                               "payload": invoice.to_api(webhook=True)},
                              ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            token = invoice.app_token
        return self._submit(str(invoice.invoice_id), body, token, update_id, copies,
                            concurrent, bad_signature)

    def _submit(self, invoice_id: str, body: bytes, token: str, update_id: int, copies: int,
                concurrent: bool, bad_signature: bool) -> list[dict[str, Any]]:
        signature = sign(token, body)
        if bad_signature:
            signature = sign(token + "-forged", body)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature}
        return self.webhooks.submit("invoice_paid", invoice_id, body, headers, copies,
                                    concurrent, {"update_id": update_id})

    # ------------------------------------------------------------ the payer and the operator

    def invoices(self) -> list[dict[str, Any]]:
        with self.lock:
            now = self.now()
            result = []
            for invoice in self.book.invoices.values():
                invoice.expire_if_due(now)
                result.append({**invoice.to_api(), "app_id": invoice.app_id,
                               "deleted": invoice.deleted})
            return result

    def invoice(self, invoice_id: int | str) -> dict[str, Any]:
        with self.lock:
            return self._invoice(invoice_id).to_api()

    def pay(self, invoice_id: int | str, asset: str | None = None, comment: str | None = None,
            anonymous: bool = False) -> dict[str, Any]:
        """The payer pays (in ``asset`` for fiat invoices); the update is sent."""
        with self.lock:
            invoice = self._invoice(invoice_id)
            try:
                self.book.pay(invoice, self.now(), asset, comment, anonymous)
            except ValueError as exc:
                raise ControlError(409, str(exc)) from None
            data = invoice.to_api()
        self.send_update(invoice)
        return data

    def expire(self, invoice_id: int | str) -> dict[str, Any]:
        """Make an active invoice expire now."""
        with self.lock:
            invoice = self._invoice(invoice_id)
            if invoice.status != "active":
                raise ControlError(409, f"invoice {invoice_id} is {invoice.status}")
            invoice.expires_at = self.now()
            invoice.expire_if_due(self.now())
            return invoice.to_api()

    def resend(self, invoice_id: int | str, new_update_id: bool = False, copies: int = 1,
               concurrent: bool = False, bad_signature: bool = False) -> list[dict[str, Any]]:
        """Send the update about an invoice again: the same bytes and ``update_id``, or a new
        update (new ``update_id`` and ``request_date``) about the invoice as it is now."""
        with self.lock:
            invoice = self._invoice(invoice_id)
        if new_update_id:
            return self.send_update(invoice, copies, concurrent, bad_signature)
        delivery = self.webhooks.last(str(invoice.invoice_id))
        if delivery is None:
            raise ControlError(404, f"no update about invoice {invoice_id} to resend")
        return self._submit(delivery.object_id, delivery.body, invoice.app_token,
                            int(delivery.tag["update_id"]), copies, concurrent, bad_signature)

    # ------------------------------------------------------------ control API

    def control_routes(self) -> list[tuple[str, str, Callable[[ControlRequest], Any]]]:
        def target(r: ControlRequest) -> str:
            return r.groups[0]

        return super().control_routes() + [
            ("GET", "invoices", lambda r: {"invoices": self.invoices()}),
            ("GET", r"invoices/(\d+)", lambda r: self.invoice(target(r))),
            ("POST", r"invoices/(\d+)/pay", lambda r: self.pay(
                target(r), **r.pick("asset", "comment", "anonymous"))),
            ("POST", r"invoices/(\d+)/expire", lambda r: self.expire(target(r))),
            ("POST", r"invoices/(\d+)/resend", lambda r: {"deliveries": self.resend(
                target(r), bool(r.body.get("new_update_id", False)),
                control_int(r.body.get("copies"), "copies", 1),
                bool(r.body.get("concurrent", False)),
                bool(r.body.get("bad_signature", False)))}),
            ("GET", "settings", lambda r: {
                "app_ids": [self.app_id(t) for t in self.tokens], "api_url": self.api_url,
                "methods": list(METHODS), "webhook": self.webhooks.settings()}),
        ]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m habitbot.sandbox.cryptopay_emulator",
                                     description="Local Crypto Pay API emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8083)
    parser.add_argument("--token", action="append", dest="tokens",
                        help="app token to accept (repeatable)")
    parser.add_argument("--webhook-url", help="where invoice_paid updates are POSTed")
    parser.add_argument("--retry-delays", default="0.5,1,2",
                        help="seconds between update attempts, comma-separated")
    parser.add_argument("--source-address", help="local address updates leave from")
    parser.add_argument("--public-url", help="base of invoice URLs seen by browsers")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; returns the process exit code."""
    args = _parse_args(argv)
    emulator = CryptoPayEmulator(
        args.host, args.port, tuple(args.tokens or [DEFAULT_TOKEN]),
        webhook_url=args.webhook_url,
        retry_delays=[float(d) for d in args.retry_delays.split(",") if d.strip()],
        source_address=args.source_address, public_url=args.public_url)
    app_ids = ", ".join(str(emulator.app_id(t)) for t in emulator.tokens)
    return serve_forever(emulator, f"Crypto Pay emulator (apps {app_ids})", args.log_level)


if __name__ == "__main__":
    sys.exit(main())
