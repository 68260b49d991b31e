"""The YooKassa emulator answers like API v3 (auth, idempotence, validation, capture, refunds),
and notifies a webhook receiver exactly like YooKassa, with retries, faults and duplicates."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from habitbot.sandbox.payments_client import PaymentsEmulatorError, YooKassaControl
from habitbot.sandbox.services import port_open
from habitbot.sandbox.yookassa_emulator import YooKassaEmulator
from tests.support.polling import wait_until

SHOP_ID = "500105"
SECRET = "test_EMULATOR-secret"
SAMPLES = Path("/work/shared/samples")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PAYMENT_ID = re.compile(r"^[0-9a-f]{8}-000f-5000-[89ab]000-[0-9a-f]{12}$")
FAST_RETRIES = (0.05, 0.1, 0.2)


# ------------------------------------------------------------------ a tiny webhook receiver


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    client_ip: str
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Records every POST; answers the scripted ``statuses`` first, then ``default``.

    ``barrier`` makes each request wait until that many arrived together (a request that came
    alone answers 500), which proves that duplicates really were sent concurrently.
    """

    def __init__(self, statuses: Sequence[int] = (), default: int = 200,
                 barrier: int | None = None) -> None:
        self.statuses = deque(statuses)
        self.default = default
        self.barrier = threading.Barrier(barrier) if barrier else None
        self.received: list[Received] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.record(Received(self.path, {k.lower(): v for k, v in
                                                     self.headers.items()},
                                         body, self.client_address[0], time.monotonic()))
                status = receiver.next_status()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/test"

    def record(self, item: Received) -> None:
        with self.changed:
            self.received.append(item)
            self.changed.notify_all()

    def next_status(self) -> int:
        if self.barrier is not None:
            try:
                self.barrier.wait(timeout=5)
            except threading.BrokenBarrierError:
                return 500
        with self.changed:
            return self.statuses.popleft() if self.statuses else self.default

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"got {len(self.received)} of {count} webhooks"
                self.changed.wait(left)
            return list(self.received)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.barrier is not None:
            self.barrier.abort()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as hook:
        yield hook


@pytest.fixture
def emu(receiver: Receiver) -> Iterator[YooKassaEmulator]:
    emulator = YooKassaEmulator(shop_id=SHOP_ID, secret_key=SECRET, webhook_url=receiver.url,
                                retry_delays=FAST_RETRIES, webhook_timeout=2.0).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def kassa(emu: YooKassaEmulator) -> Iterator[YooKassaControl]:
    with YooKassaControl(emu.url) as client:
        yield client


@pytest.fixture
def api(emu: YooKassaEmulator) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = (SHOP_ID, SECRET)
        yield session


def payment_body(**overrides: Any) -> dict[str, Any]:
    body = {"amount": {"value": "100.00", "currency": "RUB"}, "capture": True,
            "confirmation": {"type": "redirect", "return_url": "https://t.me/habitbot"},
            "description": "Premium, 1 month", "metadata": {"user_id": "42", "plan": "month"}}
    body.update(overrides)
    return body


def create(api: requests.Session, emu: YooKassaEmulator, key: str | None = None,
           **overrides: Any) -> requests.Response:
    headers = {"Idempotence-Key": key or f"key-{time.monotonic_ns()}"}
    return api.post(f"{emu.api_url}/payments", json=payment_body(**overrides), headers=headers,
                    timeout=5)


def created(api: requests.Session, emu: YooKassaEmulator, **overrides: Any) -> dict[str, Any]:
    response = create(api, emu, **overrides)
    assert response.status_code == 200, response.text
    return response.json()


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text())


def assert_shaped_like(ours: Any, theirs: Any, path: str = "") -> None:
    """Every key of the real payload exists in ours, with a value of the same JSON type
    (metadata is the merchant's own, only its type is compared)."""
    if isinstance(theirs, dict) and not path.endswith(".metadata"):
        assert isinstance(ours, dict), path
        for key, value in theirs.items():
            assert key in ours, f"{path}.{key} missing"
            assert_shaped_like(ours[key], value, f"{path}.{key}")
    else:
        assert type(ours) is type(theirs), f"{path}: {ours!r} vs {theirs!r}"


def error_of(response: requests.Response) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error" and body["id"], body
    return body


# ------------------------------------------------------------------ auth and reading


@pytest.mark.parametrize("auth", [None, (SHOP_ID, "wrong"), ("1", SECRET)])
def test_requests_without_the_shop_credentials_get_invalid_credentials(emu, auth) -> None:
    response = requests.get(f"{emu.api_url}/payments", auth=auth, timeout=5)
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "invalid_credentials"
    assert error["description"]
    malformed = requests.get(f"{emu.api_url}/payments",
                             headers={"Authorization": "Basic !!!"}, timeout=5)
    assert malformed.status_code == 401


def test_created_payment_is_pending_with_a_confirmation_page_on_the_emulator(emu, api) -> None:
    payment = created(api, emu)
    assert PAYMENT_ID.match(payment["id"])
    assert payment["status"] == "pending" and payment["paid"] is False
    assert payment["amount"] == {"value": "100.00", "currency": "RUB"}
    assert payment["metadata"] == {"user_id": "42", "plan": "month"}
    assert payment["description"] == "Premium, 1 month"
    assert payment["test"] is True and payment["refundable"] is False
    assert ISO_MS.match(payment["created_at"])
    assert payment["recipient"]["account_id"] == SHOP_ID
    confirmation = payment["confirmation"]
    assert confirmation["type"] == "redirect"
    assert confirmation["return_url"] == "https://t.me/habitbot"
    assert confirmation["confirmation_url"] == f"{emu.url}/pay/{payment['id']}"
    assert_shaped_like(payment, {k: v for k, v in sample(
        "yookassa_payment_create_response_pending.json").items() if k != "recipient"})
    fetched = api.get(f"{emu.api_url}/payments/{payment['id']}", timeout=5).json()
    assert fetched == payment


def test_numbers_in_the_request_are_answered_as_money_strings(emu, api) -> None:
    sdk_example = sample("yookassa_payment_create_request_sdk_example.json")
    response = api.post(f"{emu.api_url}/payments", json=sdk_example,
                        headers={"Idempotence-Key": "sdk-example"}, timeout=5)
    assert response.status_code == 200, response.text
    payment = response.json()
    assert payment["amount"] == {"value": "1000.00", "currency": "RUB"}
    assert payment["metadata"] == {"orderNumber": "72"}
    assert payment["receipt_registration"] == "pending"


def test_unknown_payment_is_not_found(emu, api) -> None:
    response = api.get(f"{emu.api_url}/payments/2203aa1d-000f-5000-8000-17102541fd31",
                       timeout=5)
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "not_found" and error["parameter"] == "payment_id"


def test_payments_are_listed_newest_first_with_a_cursor(emu, api) -> None:
    ids = [created(api, emu)["id"] for _ in range(3)]
    first = api.get(f"{emu.api_url}/payments", params={"limit": 2}, timeout=5).json()
    assert first["type"] == "list"
    assert [p["id"] for p in first["items"]] == ids[::-1][:2]
    rest = api.get(f"{emu.api_url}/payments",
                   params={"limit": 2, "cursor": first["next_cursor"]}, timeout=5).json()
    assert [p["id"] for p in rest["items"]] == ids[:1] and "next_cursor" not in rest


# ------------------------------------------------------------------ idempotence and validation


def test_post_without_idempotence_key_is_refused(emu, api) -> None:
    response = api.post(f"{emu.api_url}/payments", json=payment_body(), timeout=5)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_request" and error["parameter"] == "Idempotence-Key"
    too_long = create(api, emu, key="k" * 65)
    assert too_long.status_code == 400 and error_of(too_long)["parameter"] == "Idempotence-Key"


def test_same_key_and_body_returns_the_same_payment_and_creates_one(emu, api, kassa) -> None:
    first = create(api, emu, key="order-7")
    again = create(api, emu, key="order-7")
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert len(kassa.payments()) == 1


def test_same_key_with_another_body_is_an_idempotence_error(emu, api, kassa) -> None:
    create(api, emu, key="order-8")
    response = create(api, emu, key="order-8", description="another order")
    assert response.status_code == 400
    error = error_of(response)
    assert error["description"] == "Idempotence key duplicated"
    assert error["parameter"] == "Idempotence-Key"
    assert len(kassa.payments()) == 1


def test_idempotence_key_expires_after_its_ttl() -> None:
    with YooKassaEmulator(shop_id=SHOP_ID, secret_key=SECRET, idempotence_ttl=60) as emu, \
            requests.Session() as api:
        api.auth = (SHOP_ID, SECRET)
        first = create(api, emu, key="k").json()
        emu.advance_clock(61)
        second = create(api, emu, key="k").json()
        assert second["id"] != first["id"]


@pytest.mark.parametrize(("overrides", "parameter"), [
    ({"amount": None}, "amount"),
    ({"amount": {"value": "abc", "currency": "RUB"}}, "amount.value"),
    ({"amount": {"value": "-5", "currency": "RUB"}}, "amount.value"),
    ({"amount": {"value": "10.001", "currency": "RUB"}}, "amount.value"),
    ({"amount": {"value": "10.00", "currency": "XXX"}}, "amount.currency"),
    ({"description": "x" * 129}, "description"),
    ({"metadata": "user=42"}, "metadata"),
    ({"metadata": {"nested": {"a": 1}}}, "metadata"),
    ({"capture": "yes"}, "capture"),
    ({"confirmation": None}, "confirmation"),
    ({"confirmation": {"type": "teleport"}}, "confirmation.type"),
    ({"confirmation": {"type": "redirect"}}, "confirmation.return_url"),
    ({"receipt": {"items": []}}, "receipt.items"),
])
def test_invalid_payment_requests_name_the_parameter(emu, api, kassa, overrides,
                                                      parameter) -> None:
    body = payment_body(**overrides)
    body = {k: v for k, v in body.items() if v is not None}
    response = api.post(f"{emu.api_url}/payments", json=body,
                        headers={"Idempotence-Key": f"bad-{parameter}"}, timeout=5)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == "invalid_request" and error["parameter"] == parameter
    assert kassa.payments() == []


def test_non_json_bodies_and_wrong_methods_are_refused(emu, api) -> None:
    form = api.post(f"{emu.api_url}/payments", data={"amount": "1"},
                    headers={"Idempotence-Key": "form"}, timeout=5)
    assert form.status_code == 415
    broken = api.post(f"{emu.api_url}/payments", data=b"{", timeout=5,
                      headers={"Idempotence-Key": "broken", "Content-Type": "application/json"})
    assert broken.status_code == 400 and error_of(broken)["code"] == "invalid_request"
    assert api.get(f"{emu.api_url}/payments/x/cancel", timeout=5).status_code == 405


# ------------------------------------------------------------------ paying and notifications


def test_paying_on_the_page_sends_payment_succeeded_like_yookassa(emu, api, receiver) -> None:
    payment = created(api, emu)
    page = requests.get(payment["confirmation"]["confirmation_url"], timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert 'value="pay"' in page.text and 'value="cancel"' in page.text
    assert "100.00 RUB" in page.text
    done = requests.post(payment["confirmation"]["confirmation_url"], data={"action": "pay"},
                         timeout=5)
    assert done.status_code == 200 and "succeeded" in done.text

    [hook] = receiver.wait_for(1)
    assert hook.client_ip == "127.0.0.1"
    assert hook.headers["content-type"] == "application/json"
    notification = hook.json()
    assert set(notification) == {"type", "event", "object"}
    assert notification["type"] == "notification"
    assert notification["event"] == "payment.succeeded"
    assert_shaped_like(notification, sample("yookassa_payment_succeeded.json"))
    obj = notification["object"]
    assert obj["id"] == payment["id"] and obj["status"] == "succeeded" and obj["paid"] is True
    assert obj["metadata"] == payment["metadata"]
    assert obj["refunded_amount"] == {"value": "0.00", "currency": "RUB"}
    assert ISO_MS.match(obj["captured_at"]) and "confirmation" not in obj
    assert api.get(f"{emu.api_url}/payments/{payment['id']}", timeout=5).json() == obj


def test_cancel_on_the_page_sends_payment_canceled(emu, api, receiver) -> None:
    payment = created(api, emu)
    requests.post(payment["confirmation"]["confirmation_url"], data={"action": "cancel"},
                  timeout=5)
    [hook] = receiver.wait_for(1)
    notification = hook.json()
    assert notification["event"] == "payment.canceled"
    assert notification["object"]["status"] == "canceled"
    assert notification["object"]["cancellation_details"] == {
        "party": "yoo_money", "reason": "expired_on_confirmation"}
    again = requests.get(payment["confirmation"]["confirmation_url"], timeout=5)
    assert 'value="pay"' not in again.text


def test_a_declined_payment_names_the_bank_as_the_party(emu, api, kassa, receiver) -> None:
    payment = created(api, emu)
    canceled = kassa.cancel(payment["id"], reason="insufficient_funds")
    assert canceled["cancellation_details"] == {"party": "payment_network",
                                                "reason": "insufficient_funds"}
    with pytest.raises(PaymentsEmulatorError) as refused:
        kassa.pay(payment["id"])
    assert refused.value.status == 409


def test_two_stage_payment_waits_for_capture_then_captures_partially(emu, api, kassa,
                                                                     receiver) -> None:
    payment = created(api, emu, capture=False)
    kassa.pay(payment["id"])
    [hook] = receiver.wait_for(1)
    notification = hook.json()
    assert notification["event"] == "payment.waiting_for_capture"
    assert_shaped_like(notification, sample("yookassa_payment_waiting_for_capture.json"))
    assert notification["object"]["paid"] is True
    assert ISO_MS.match(notification["object"]["expires_at"])

    not_now = api.post(f"{emu.api_url}/payments/{payment['id']}/capture", timeout=5,
                       json={"amount": {"value": "150.00", "currency": "RUB"}},
                       headers={"Idempotence-Key": "capture-too-much"})
    assert not_now.status_code == 400 and error_of(not_now)["parameter"] == "amount.value"
    captured = api.post(f"{emu.api_url}/payments/{payment['id']}/capture", timeout=5,
                        json={"amount": {"value": "80.00", "currency": "RUB"}},
                        headers={"Idempotence-Key": "capture-1"})
    assert captured.status_code == 200, captured.text
    assert captured.json()["status"] == "succeeded"
    assert captured.json()["amount"]["value"] == "80.00"
    succeeded = receiver.wait_for(2)[1].json()
    assert succeeded["event"] == "payment.succeeded"
    assert succeeded["object"]["amount"]["value"] == "80.00"
    replay = api.post(f"{emu.api_url}/payments/{payment['id']}/capture", timeout=5,
                      json={"amount": {"value": "80.00", "currency": "RUB"}},
                      headers={"Idempotence-Key": "capture-1"})
    assert replay.json() == captured.json()


def test_capture_and_cancel_need_a_payment_waiting_for_capture(emu, api, kassa,
                                                               receiver) -> None:
    pending = created(api, emu, capture=False)
    refused = api.post(f"{emu.api_url}/payments/{pending['id']}/capture", json={},
                       headers={"Idempotence-Key": "early"}, timeout=5)
    assert refused.status_code == 400 and error_of(refused)["code"] == "invalid_request"
    no_key = api.post(f"{emu.api_url}/payments/{pending['id']}/cancel", timeout=5)
    assert no_key.status_code == 400 and error_of(no_key)["parameter"] == "Idempotence-Key"
    kassa.pay(pending["id"])
    canceled = api.post(f"{emu.api_url}/payments/{pending['id']}/cancel",
                        headers={"Idempotence-Key": "cancel-1"}, timeout=5)
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled" and canceled.json()["paid"] is False
    assert canceled.json()["cancellation_details"] == {"party": "merchant",
                                                       "reason": "canceled_by_merchant"}
    events = sorted(r.json()["event"] for r in receiver.wait_for(2))
    assert events == ["payment.canceled", "payment.waiting_for_capture"]


def test_uncaptured_payment_expires_when_the_clock_passes_its_deadline(emu, api, kassa,
                                                                       receiver) -> None:
    payment = created(api, emu, capture=False)
    kassa.pay(payment["id"])
    kassa.advance_clock(7 * 24 * 3600 + 1)
    assert kassa.payment(payment["id"])["cancellation_details"]["reason"] == "expired_on_capture"
    stale = created(api, emu)
    kassa.advance_clock(3601)
    assert kassa.payment(stale["id"])["cancellation_details"] == {
        "party": "yoo_money", "reason": "expired_on_confirmation"}
    events = sorted(r.json()["event"] for r in receiver.wait_for(3))
    assert events == ["payment.canceled", "payment.canceled", "payment.waiting_for_capture"]


def test_partial_and_full_refunds(emu, api, kassa, receiver) -> None:
    payment = created(api, emu)
    kassa.pay(payment["id"])

    def refund(value: str, key: str) -> requests.Response:
        return api.post(f"{emu.api_url}/refunds", timeout=5, headers={"Idempotence-Key": key},
                        json={"payment_id": payment["id"],
                              "amount": {"value": value, "currency": "RUB"}})

    first = refund("30.00", "refund-1")
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "succeeded"
    assert first.json()["amount"] == {"value": "30.00", "currency": "RUB"}
    after_first = kassa.payment(payment["id"])
    assert after_first["refunded_amount"]["value"] == "30.00"
    assert after_first["refundable"] is True and after_first["status"] == "succeeded"
    too_much = refund("70.01", "refund-2")
    assert too_much.status_code == 400 and error_of(too_much)["parameter"] == "amount.value"
    assert refund("70.00", "refund-3").status_code == 200
    final = api.get(f"{emu.api_url}/payments/{payment['id']}", timeout=5).json()
    assert final["refunded_amount"]["value"] == "100.00" and final["refundable"] is False
    assert refund("1.00", "refund-4").status_code == 400

    hooks = receiver.wait_for(3)
    refunds = [h.json() for h in hooks if h.json()["event"] == "refund.succeeded"]
    assert len(refunds) == 2
    shape = sample("yookassa_refund_succeeded.json")
    shape["object"]["amount"]["value"] = "250.00"
    for key in ("receipt_registration", "comment"):
        shape["object"].pop(key)
    for notification in refunds:
        assert_shaped_like(notification, shape)
    assert first.json() in [n["object"] for n in refunds]
    listed = api.get(f"{emu.api_url}/refunds", params={"payment_id": payment["id"]},
                     timeout=5).json()
    assert len(listed["items"]) == 2
    one = api.get(f"{emu.api_url}/refunds/{first.json()['id']}", timeout=5).json()
    assert one == first.json()


def test_refunds_need_a_succeeded_payment(emu, api) -> None:
    payment = created(api, emu)
    response = api.post(f"{emu.api_url}/refunds", headers={"Idempotence-Key": "r"}, timeout=5,
                        json={"payment_id": payment["id"],
                              "amount": {"value": "1.00", "currency": "RUB"}})
    assert response.status_code == 400 and error_of(response)["parameter"] == "payment_id"


# ------------------------------------------------------------------ delivery and retries


def test_notification_is_retried_after_500_until_the_receiver_answers_200(emu, api,
                                                                          kassa) -> None:
    with Receiver(statuses=(500, 503)) as flaky:
        kassa.set_webhook(flaky.url)
        payment = created(api, emu)
        kassa.pay(payment["id"])
        [delivery] = kassa.wait_delivered(payment["id"])
        assert delivery["statuses"] == [500, 503, 200]
        hooks = flaky.wait_for(3)
    assert len({h.body for h in hooks}) == 1
    assert hooks[0].json()["event"] == "payment.succeeded"


def test_delivery_gives_up_after_the_retry_schedule(emu, api, kassa) -> None:
    with Receiver(default=500) as broken:
        kassa.set_webhook(broken.url, retry_delays=[0.01, 0.01])
        payment = created(api, emu)
        kassa.pay(payment["id"])
        [delivery] = kassa.wait_settled(payment["id"])
    assert delivery["state"] == "failed" and delivery["statuses"] == [500, 500, 500]


def test_connection_errors_are_retried_and_recorded(emu, api, kassa) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    kassa.set_webhook(f"http://127.0.0.1:{closed_port}/hook", retry_delays=[0.01])
    payment = created(api, emu)
    kassa.pay(payment["id"])
    [delivery] = kassa.wait_settled(payment["id"])
    assert delivery["state"] == "failed"
    assert [a["status"] for a in delivery["attempts"]] == [None, None]
    assert all("Connection" in a["error"] for a in delivery["attempts"])


def test_disabled_webhooks_record_skipped_notifications(emu, api, kassa, receiver) -> None:
    kassa.set_webhook(enabled=False)
    payment = created(api, emu)
    kassa.pay(payment["id"])
    [delivery] = kassa.deliveries(payment["id"])
    assert delivery["state"] == "skipped" and delivery["reason"] == "webhooks disabled"
    kassa.set_webhook(enabled=True)
    kassa.resend(payment["id"])
    assert len(kassa.wait_delivered(payment["id"])) == 1


def test_notifications_can_leave_from_another_loopback_address(receiver) -> None:
    with YooKassaEmulator(shop_id=SHOP_ID, secret_key=SECRET, webhook_url=receiver.url,
                          notification_source="127.0.0.2") as emu:
        with requests.Session() as api:
            api.auth = (SHOP_ID, SECRET)
            emu.pay(created(api, emu)["id"])
        [hook] = receiver.wait_for(1)
    assert hook.client_ip == "127.0.0.2"


def test_concurrent_duplicate_notifications_are_delivered_n_times(emu, api, kassa,
                                                                  receiver) -> None:
    payment = created(api, emu)
    kassa.pay(payment["id"])
    [original] = receiver.wait_for(1)
    with Receiver(barrier=5) as racing:
        kassa.set_webhook(racing.url)
        deliveries = kassa.resend(payment["id"], copies=5, concurrent=True)
        assert len(deliveries) == 5
        hooks = racing.wait_for(5)
        delivered = kassa.wait_delivered(payment["id"], count=6)
    assert {h.body for h in hooks} == {original.body}
    assert all(d["statuses"] == [200] for d in delivered)


def test_a_forged_event_lets_tests_check_that_the_app_rereads_the_payment(emu, api, kassa,
                                                                          receiver) -> None:
    payment = created(api, emu)
    kassa.notify(payment["id"], "payment.succeeded", overrides={"status": "succeeded",
                                                                "paid": True})
    forged = receiver.wait_for(1)[0].json()
    assert forged["event"] == "payment.succeeded" and forged["object"]["status"] == "succeeded"
    assert kassa.payment(payment["id"])["status"] == "pending"
    api.get(f"{emu.api_url}/payments/{payment['id']}", timeout=5)
    reads = kassa.requests(endpoint="get_payment")
    assert [r["object_id"] for r in reads] == [payment["id"]] and reads[0]["status"] == 200


# ------------------------------------------------------------------ API faults


def test_5xx_after_processing_then_a_retry_with_the_same_key_finds_the_payment(emu, api,
                                                                              kassa) -> None:
    kassa.add_fault("5xx", endpoints="create_payment", count=1, after=True)
    lost = create(api, emu, key="retry-me")
    assert lost.status_code == 500
    assert error_of(lost)["code"] == "internal_server_error"
    retried = create(api, emu, key="retry-me")
    assert retried.status_code == 200
    assert [p["id"] for p in kassa.payments()] == [retried.json()["id"]]


def test_5xx_before_processing_changes_nothing(emu, api, kassa) -> None:
    kassa.add_fault("5xx", count=2, status=502)
    proxy = create(api, emu)
    assert proxy.status_code == 502 and "text/html" in proxy.headers["Content-Type"]
    assert api.get(f"{emu.api_url}/payments", timeout=5).status_code == 502
    assert kassa.payments() == []
    assert create(api, emu).status_code == 200


def test_429_answers_too_many_requests_with_retry_after(emu, api, kassa) -> None:
    kassa.add_fault("429", endpoints=["list_payments"], count=1, retry_after=3)
    response = api.get(f"{emu.api_url}/payments", timeout=5)
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    assert error_of(response)["code"] == "too_many_requests"


def test_timeout_fault_holds_the_request_until_the_client_gives_up(emu, api, kassa) -> None:
    kassa.add_fault("timeout", endpoints=["get_payment"], count=1)
    payment = created(api, emu)
    with pytest.raises(requests.ReadTimeout):
        api.get(f"{emu.api_url}/payments/{payment['id']}", timeout=0.3)
    assert api.get(f"{emu.api_url}/payments/{payment['id']}", timeout=5).status_code == 200
    kassa.clear_faults()


def test_outage_resets_connections_until_it_ends(emu, api, kassa) -> None:
    fault = kassa.add_fault("outage", seconds=60)
    assert fault["mode"] == "outage" and kassa.faults()[0]["id"] == fault["id"]
    with pytest.raises(requests.ConnectionError):
        create(api, emu)
    assert kassa.clear_faults() == 1
    assert create(api, emu).status_code == 200
    hits = kassa.requests(endpoint="create_payment")
    assert [(r["status"], r["fault"]) for r in hits] == [(None, "outage"), (200, None)]


def test_control_api_refuses_unknown_payments_and_bad_faults(kassa) -> None:
    with pytest.raises(PaymentsEmulatorError) as unknown:
        kassa.pay("no-such-payment")
    assert unknown.value.status == 404
    with pytest.raises(PaymentsEmulatorError) as bad:
        kassa.add_fault("meltdown")
    assert bad.value.status == 400
    kassa.reset()
    assert kassa.payments() == [] and kassa.deliveries() == []


# ------------------------------------------------------------------ 54-FZ receipts


def receipt(**overrides: Any) -> dict[str, Any]:
    """A receipt for ``payment_body()``: one service worth 100.00 RUB."""
    item = {"description": "Premium, 1 month", "quantity": "1.00",
            "amount": {"value": "100.00", "currency": "RUB"}, "vat_code": 1,
            "payment_mode": "full_payment", "payment_subject": "service"}
    item.update(overrides.pop("item", {}))
    body: dict[str, Any] = {"customer": {"email": "payer@example.com"}, "items": [item]}
    body.update(overrides)
    return body


def test_a_shop_that_requires_receipts_refuses_a_payment_without_one(emu, api,
                                                                     kassa) -> None:
    assert kassa.settings()["receipts_required"] is False
    assert kassa.require_receipts()["receipts_required"] is True
    response = create(api, emu)
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["parameter"]) == ("invalid_request", "receipt")
    assert error["description"] == "Receipt is missing or illegal"
    assert kassa.payments() == []
    kassa.reset()  # forgets payments, keeps the shop's settings
    assert kassa.settings()["receipts_required"] is True
    kassa.require_receipts(False)
    assert create(api, emu).status_code == 200


def test_a_valid_receipt_is_kept_and_registered_once_paid(emu, api, kassa) -> None:
    kassa.require_receipts()
    sent = receipt(tax_system_code=2)
    payment = created(api, emu, receipt=sent)
    assert payment["receipt_registration"] == "pending"
    assert kassa.receipt(payment["id"]) == sent
    paid = kassa.pay(payment["id"])
    assert paid["receipt_registration"] == "succeeded"
    fetched = api.get(f"{emu.api_url}/payments/{payment['id']}", timeout=5).json()
    assert fetched["receipt_registration"] == "succeeded"


def test_a_payment_without_a_receipt_has_none_to_show(emu, api, kassa) -> None:
    payment = created(api, emu)
    assert kassa.receipt(payment["id"]) is None
    assert "receipt_registration" not in payment
    with pytest.raises(PaymentsEmulatorError) as unknown:
        kassa.receipt("no-such-payment")
    assert unknown.value.status == 404


def test_items_add_up_as_prices_times_quantities(emu, api, kassa) -> None:
    items = [{"description": "Glass", "quantity": "2.000", "vat_code": "2",
              "amount": {"value": "25.00", "currency": "RUB"}},
             {"description": "Jug", "quantity": 1, "vat_code": 12,
              "amount": {"value": 50, "currency": "RUB"}}]
    payment = created(api, emu, receipt={"phone": "79001234567", "items": items})
    assert kassa.receipt(payment["id"])["items"] == items


@pytest.mark.parametrize(("sent", "parameter"), [
    (receipt(item={"amount": {"value": "99.99", "currency": "RUB"}}), "receipt.items.amount"),
    (receipt(item={"quantity": "2"}), "receipt.items.amount"),
    (receipt(item={"vat_code": None}), "receipt.items.vat_code"),
    (receipt(item={"vat_code": 13}), "receipt.items.vat_code"),
    (receipt(item={"vat_code": True}), "receipt.items.vat_code"),
    (receipt(item={"quantity": "0"}), "receipt.items.quantity"),
    (receipt(item={"quantity": "1.0001"}), "receipt.items.quantity"),
    (receipt(item={"description": ""}), "receipt.items.description"),
    (receipt(item={"description": "x" * 129}), "receipt.items.description"),
    (receipt(item={"amount": {"value": "100.00", "currency": "USD"}}),
     "receipt.items.amount.currency"),
    (receipt(item={"payment_mode": "someday"}), "receipt.items.payment_mode"),
    (receipt(item={"payment_subject": "gift"}), "receipt.items.payment_subject"),
    (receipt(customer={}), "receipt.customer"),
    (receipt(customer={"email": "nobody"}), "receipt.customer.email"),
    (receipt(customer={"phone": "call me"}), "receipt.customer.phone"),
    (receipt(tax_system_code=7), "receipt.tax_system_code"),
    ({"customer": {"email": "payer@example.com"}, "items": [receipt()["items"][0]] * 101},
     "receipt.items"),
    ("a receipt", "receipt"),
])
def test_an_invalid_receipt_is_refused_naming_the_parameter(emu, api, kassa, sent,
                                                             parameter) -> None:
    response = create(api, emu, receipt=sent)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == "invalid_request" and error["parameter"] == parameter
    assert "payer@example.com" not in error["description"]
    assert kassa.payments() == []


def test_the_shop_setting_is_checked(kassa) -> None:
    for body in ({"receipts_required": "yes"}, {"receipts_needed": True}):
        response = requests.post(f"{kassa.base_url}/control/settings", json=body, timeout=5)
        assert response.status_code == 400, body
    assert kassa.settings()["receipts_required"] is False


# ------------------------------------------------------------------ command line


def test_command_line_serves_until_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "habitbot.sandbox.yookassa_emulator", "--port", str(port),
         "--shop-id", SHOP_ID, "--secret-key", SECRET, "--log-level", "WARNING",
         "--receipts-required"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: port_open(port) or process.poll() is not None, 15,
                   "the emulator to listen")
        health = requests.get(f"http://127.0.0.1:{port}/control/health", timeout=2)
        assert health.json()["ok"] is True
        settings = requests.get(f"http://127.0.0.1:{port}/control/settings", timeout=2).json()
        assert settings["shop_id"] == SHOP_ID and settings["receipts_required"] is True
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
