"""Python clients of the payment emulators' control API (``/control/...``).

Tests and the sandbox use them to play the payer, to look at the webhook deliveries and what the
receiver answered, to inject faults and to send duplicates::

    with YooKassaControl(emulator_url) as kassa:
        kassa.set_webhook("http://127.0.0.1:8080/webhooks/yookassa")
        kassa.pay(payment_id)
        [delivery] = kassa.wait_delivered(payment_id)

Waiting long-polls ``/control/deliveries?wait_version=N``, so nothing sleeps blindly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

Delivery = dict[str, Any]
_UNSET: Any = object()


class PaymentsEmulatorError(RuntimeError):
    """The control API refused a request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ControlClient:
    """What both emulators' control APIs share: faults, webhooks, deliveries, log, clock."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ plumbing

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        response = self._session.request(method, f"{self.base_url}/control/{path}", json=body,
                                         params=params, timeout=timeout or self.timeout)
        data = response.json() if response.content else {}
        if response.status_code >= 400:
            raise PaymentsEmulatorError(response.status_code,
                                        str(data.get("error", response.text)))
        return data

    def _post(self, path: str, **fields: Any) -> Any:
        return self._request("POST", path, {k: v for k, v in fields.items() if v is not None})

    # ------------------------------------------------------------ shared operations

    def health(self) -> bool:
        return bool(self._request("GET", "health").get("ok"))

    def reset(self) -> None:
        self._post("reset")

    def settings(self) -> dict[str, Any]:
        return self._request("GET", "settings")

    def add_fault(self, mode: str, endpoints: Sequence[str] | str | None = None,
                  count: int | None = None, seconds: float | None = None,
                  status: int | None = None, after: bool = False,
                  retry_after: int | None = None) -> dict[str, Any]:
        """``5xx`` / ``timeout`` / ``outage`` / ``429`` on some endpoints (all when None),
        for ``count`` calls or ``seconds``; ``after`` strikes once the call was processed."""
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        return self._post("faults", mode=mode, endpoints=endpoints, count=count,
                          seconds=seconds, status=status, after=after or None,
                          retry_after=retry_after)

    def faults(self) -> list[dict[str, Any]]:
        return self._request("GET", "faults")["faults"]

    def clear_faults(self) -> int:
        return int(self._request("DELETE", "faults")["cleared"])

    def webhook(self) -> dict[str, Any]:
        return self._request("GET", "webhook")

    def set_webhook(self, url: str | None = _UNSET, enabled: bool | None = None,
                    retry_delays: Sequence[float] | None = None, timeout: float | None = None,
                    source_address: str | None = _UNSET) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if url is not _UNSET:
            body["url"] = url
        if source_address is not _UNSET:
            body["source_address"] = source_address
        if enabled is not None:
            body["enabled"] = enabled
        if retry_delays is not None:
            body["retry_delays"] = list(retry_delays)
        if timeout is not None:
            body["timeout"] = timeout
        return self._request("POST", "webhook", body)

    def deliveries(self, object_id: str | int | None = None,
                   event: str | None = None) -> list[Delivery]:
        params = {"object_id": object_id, "event": event}
        return self._request("GET", "deliveries", params=_present(params))["deliveries"]

    def wait_for_deliveries(self, predicate: Callable[[list[Delivery]], Any],
                            timeout: float = 10.0, object_id: str | int | None = None,
                            event: str | None = None) -> Any:
        """Long-poll until ``predicate(deliveries)`` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        version = -1
        while True:
            left = deadline - time.monotonic()
            params: dict[str, Any] = {"object_id": object_id, "event": event}
            if version >= 0:
                params.update(wait_version=version, timeout=max(0.0, min(left, 5.0)))
            data = self._request("GET", "deliveries", params=_present(params),
                                 timeout=self.timeout + 5)
            value = predicate(data["deliveries"])
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"deliveries never matched: {data['deliveries']}")
            version = int(data["version"])

    def wait_delivered(self, object_id: str | int, count: int = 1, timeout: float = 10.0,
                       event: str | None = None) -> list[Delivery]:
        """Wait until ``count`` deliveries about an object got a 2xx; returns them."""
        def done(deliveries: list[Delivery]) -> list[Delivery] | None:
            delivered = [d for d in deliveries if d["state"] == "delivered"]
            return delivered if len(delivered) >= count else None

        return self.wait_for_deliveries(done, timeout, object_id, event)

    def wait_settled(self, object_id: str | int | None = None,
                     timeout: float = 10.0) -> list[Delivery]:
        """Wait until no delivery is still pending (delivered, failed or skipped)."""
        return self.wait_for_deliveries(
            lambda ds: ds if ds and all(d["state"] != "pending" for d in ds) else None,
            timeout, object_id)

    def requests(self, endpoint: str | None = None, since_id: int = 0) -> list[dict[str, Any]]:
        """The API calls the emulator answered (endpoint, status, idempotence key, ...)."""
        params = _present({"endpoint": endpoint, "since_id": since_id or None})
        return self._request("GET", "requests", params=params)["requests"]

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the emulator's clock forward (expiry), then apply what became due."""
        return self._post("clock", advance=seconds)


class YooKassaControl(ControlClient):
    """Control client of :class:`~habitbot.sandbox.yookassa_emulator.YooKassaEmulator`."""

    def __enter__(self) -> YooKassaControl:
        return self

    def payments(self) -> list[dict[str, Any]]:
        return self._request("GET", "payments")["payments"]

    def payment(self, payment_id: str) -> dict[str, Any]:
        return self._request("GET", f"payments/{payment_id}")

    def pay(self, payment_id: str, card: dict[str, str] | None = None,
            method_type: str | None = None) -> dict[str, Any]:
        """The payer confirms: succeeded (capture true) or waiting_for_capture."""
        return self._post(f"payments/{payment_id}/pay", card=card, method_type=method_type)

    def cancel(self, payment_id: str, reason: str | None = None) -> dict[str, Any]:
        """YooKassa's side cancels (expiry or decline, e.g. ``insufficient_funds``)."""
        return self._post(f"payments/{payment_id}/cancel", reason=reason)

    def capture(self, payment_id: str, amount: str | float | None = None) -> dict[str, Any]:
        return self._post(f"payments/{payment_id}/capture", amount=amount)

    def refund(self, payment_id: str, amount: str | float | None = None,
               description: str | None = None) -> dict[str, Any]:
        return self._post(f"payments/{payment_id}/refund", amount=amount,
                          description=description)

    def refunds(self, payment_id: str | None = None) -> list[dict[str, Any]]:
        params = _present({"payment_id": payment_id})
        return self._request("GET", "refunds", params=params)["refunds"]

    def receipt(self, payment_id: str) -> dict[str, Any] | None:
        """The 54-FZ receipt the payment was created with (None without one)."""
        return self._request("GET", f"payments/{payment_id}/receipt")["receipt"]

    def require_receipts(self, required: bool = True) -> dict[str, Any]:
        """The shop refuses payments without a valid 54-FZ receipt (or stops refusing);
        returns the shop's settings."""
        return self._request("POST", "settings", {"receipts_required": required})

    def resend(self, payment_id: str, event: str | None = None, copies: int = 1,
               concurrent: bool = False) -> list[Delivery]:
        """The last notification about the payment again, byte for byte, ``copies`` times."""
        return self._post(f"payments/{payment_id}/resend", event=event, copies=copies,
                          concurrent=concurrent)["deliveries"]

    def notify(self, payment_id: str, event: str, copies: int = 1, concurrent: bool = False,
               overrides: dict[str, Any] | None = None) -> list[Delivery]:
        """A fresh notification with any event (forged ones too) about the payment."""
        return self._post(f"payments/{payment_id}/notify", event=event, copies=copies,
                          concurrent=concurrent, overrides=overrides)["deliveries"]


class CryptoPayControl(ControlClient):
    """Control client of :class:`~habitbot.sandbox.cryptopay_emulator.CryptoPayEmulator`."""

    def __enter__(self) -> CryptoPayControl:
        return self

    def invoices(self) -> list[dict[str, Any]]:
        return self._request("GET", "invoices")["invoices"]

    def invoice(self, invoice_id: int) -> dict[str, Any]:
        return self._request("GET", f"invoices/{invoice_id}")

    def pay(self, invoice_id: int, asset: str | None = None, comment: str | None = None,
            anonymous: bool = False) -> dict[str, Any]:
        return self._post(f"invoices/{invoice_id}/pay", asset=asset, comment=comment,
                          anonymous=anonymous or None)

    def expire(self, invoice_id: int) -> dict[str, Any]:
        return self._post(f"invoices/{invoice_id}/expire")

    def resend(self, invoice_id: int, new_update_id: bool = False, copies: int = 1,
               concurrent: bool = False, bad_signature: bool = False) -> list[Delivery]:
        """The update again: same bytes and update_id, or a new update_id; optionally with a
        signature made with the wrong key."""
        return self._post(f"invoices/{invoice_id}/resend", new_update_id=new_update_id,
                          copies=copies, concurrent=concurrent,
                          bad_signature=bad_signature)["deliveries"]


def _present(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}
