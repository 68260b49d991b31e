"""The Crypto Pay emulator answers like pay.crypt.bot (envelopes, error names, invoices) and sends
signed ``invoice_paid`` updates like Crypto Pay, with retries, faults and duplicates."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from habitbot.sandbox.cryptopay_emulator import SIGNATURE_HEADER, CryptoPayEmulator, sign
from habitbot.sandbox.payments_client import CryptoPayControl, PaymentsEmulatorError
from habitbot.sandbox.services import port_open
from tests.sandbox.test_yookassa_emulator import (
    FAST_RETRIES,
    ISO_MS,
    Received,
    Receiver,
    assert_shaped_like,
    sample,
)
from tests.support.polling import wait_until

TOKEN = "7777:AAtestCryptoPayEmulator"
OTHER_TOKEN = "8888:AAanotherApp"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as hook:
        yield hook


@pytest.fixture
def emu(receiver: Receiver) -> Iterator[CryptoPayEmulator]:
    emulator = CryptoPayEmulator(tokens=(TOKEN, OTHER_TOKEN), webhook_url=receiver.url,
                                 retry_delays=FAST_RETRIES, webhook_timeout=2.0).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def bot(emu: CryptoPayEmulator) -> Iterator[CryptoPayControl]:
    with CryptoPayControl(emu.url) as client:
        yield client


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def api(emu: CryptoPayEmulator, http: requests.Session) -> Any:
    """Call a method with a JSON body as the app does; returns (HTTP status, envelope)."""

    def call(method: str, token: str = TOKEN, **params: Any) -> tuple[int, dict[str, Any]]:
        response = http.post(f"{emu.api_url}/{method}", json=params, timeout=5,
                             headers={"Crypto-Pay-API-Token": token})
        return response.status_code, response.json()

    return call


def invoice(api: Any, **params: Any) -> dict[str, Any]:
    params = {"asset": "USDT", "amount": "1.5", "description": "Premium, 1 month",
              "payload": "user:42:month", **params}
    status, body = api("createInvoice", **params)
    assert status == 200 and body["ok"] is True, body
    return body["result"]


def verify(hook: Received, token: str = TOKEN) -> dict[str, Any]:
    """Check the update's signature like the app must, then parse it."""
    key = hashlib.sha256(token.encode()).digest()
    expected = hmac.new(key, hook.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers[SIGNATURE_HEADER], expected)
    return hook.json()


# ------------------------------------------------------------------ auth and basics


@pytest.mark.parametrize("headers", [{}, {"Crypto-Pay-API-Token": "7777:wrong"}])
def test_missing_or_wrong_token_is_unauthorized(emu, http, headers) -> None:
    response = http.get(f"{emu.api_url}/getMe", headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error": {"code": 401, "name": "UNAUTHORIZED"}}


def test_get_me_describes_the_app_of_the_token(api) -> None:
    assert api("getMe") == (200, {"ok": True, "result": {
        "app_id": 7777, "name": "HabitBot sandbox", "payment_processing_bot_username":
        "CryptoBot"}})
    assert api("getMe", token=OTHER_TOKEN)[1]["result"]["app_id"] == 8888


def test_unknown_method_is_method_not_found(api) -> None:
    assert api("sendTelepathy") == (405, {"ok": False, "error": {
        "code": 405, "name": "METHOD_NOT_FOUND"}})


def test_crypto_invoice_is_active_with_pay_links_on_the_emulator(emu, api, http) -> None:
    created = invoice(api, expires_in=600, hidden_message="Thanks!",
                      paid_btn_name="openBot", paid_btn_url="https://t.me/habitbot")
    assert created["status"] == "active" and created["currency_type"] == "crypto"
    assert created["asset"] == "USDT" and created["amount"] == "1.5"
    assert created["hash"].startswith("IV") and len(created["hash"]) == 12
    assert created["payload"] == "user:42:month"
    assert created["hidden_message"] == "Thanks!" and created["paid_btn_name"] == "openBot"
    assert ISO_MS.match(created["created_at"]) and ISO_MS.match(created["expiration_date"])
    for name in ("bot_invoice_url", "mini_app_invoice_url", "web_app_invoice_url"):
        assert created[name].startswith(f"{emu.url}/pay/{created['hash']}")
    page = http.get(created["web_app_invoice_url"], timeout=5)
    assert page.status_code == 200 and "1.5 USDT" in page.text and 'value="pay"' in page.text


def test_parameters_may_come_in_the_query_string_or_a_form(emu, http) -> None:
    headers = {"Crypto-Pay-API-Token": TOKEN}
    by_query = http.get(f"{emu.api_url}/createInvoice", headers=headers, timeout=5,
                        params={"asset": "TON", "amount": "3", "allow_comments": "false"})
    assert by_query.json()["result"]["allow_comments"] is False
    by_form = http.post(f"{emu.api_url}/createInvoice", headers=headers, timeout=5,
                        data={"currency_type": "fiat", "fiat": "RUB", "amount": "100"})
    assert by_form.json()["result"]["fiat"] == "RUB"


@pytest.mark.parametrize(("params", "status", "name"), [
    ({"asset": None}, 400, "ASSET_REQUIRED"),
    ({"asset": "DOGE"}, 400, "UNSUPPORTED_ASSET"),
    ({"currency_type": "barter"}, 400, "CURRENCY_TYPE_INVALID"),
    ({"amount": "lots"}, 400, "AMOUNT_INVALID"),
    ({"amount": "0"}, 400, "AMOUNT_INVALID"),
    ({"description": "d" * 1025}, 400, "DESCRIPTION_TOO_LONG"),
    ({"payload": "я" * 2049}, 400, "PAYLOAD_TOO_LONG"),
    ({"expires_in": 0}, 400, "EXPIRES_IN_INVALID"),
    ({"expires_in": 2678401}, 400, "EXPIRES_IN_INVALID"),
    ({"paid_btn_name": "callback"}, 400, "PAID_BTN_URL_REQUIRED"),
    ({"paid_btn_name": "dance", "paid_btn_url": "https://x.y"}, 400, "PAID_BTN_NAME_INVALID"),
    ({"currency_type": "fiat", "fiat": "XXX"}, 400, "UNSUPPORTED_FIAT"),
    ({"currency_type": "fiat", "fiat": "RUB", "accepted_assets": "USDT,DOGE"}, 400,
     "UNSUPPORTED_ASSET"),
    ({"currency_type": "fiat", "fiat": "RUB", "accepted_assets": ["USDT"]}, 500, "APP_ERROR"),
])
def test_invalid_invoice_parameters_get_crypto_pay_error_names(api, bot, params, status,
                                                               name) -> None:
    body = {"asset": "USDT", "amount": "1", **params}
    code, envelope = api("createInvoice", **{k: v for k, v in body.items() if v is not None})
    assert (code, envelope) == (status, {"ok": False, "error": {"code": status, "name": name}})
    assert bot.invoices() == []


def test_payload_limit_counts_bytes_not_characters(api) -> None:
    assert invoice(api, payload="я" * 2048)["payload"] == "я" * 2048


# ------------------------------------------------------------------ paying and updates


def test_paying_sends_a_signed_invoice_paid_update_like_crypto_pay(emu, api, bot,
                                                                   receiver) -> None:
    created = invoice(api)
    paid = bot.pay(created["invoice_id"], comment="for the streaks")
    assert paid["status"] == "paid"
    [hook] = receiver.wait_for(1)
    assert hook.client_ip == "127.0.0.1" and hook.headers["content-type"] == "application/json"
    update = verify(hook)
    assert_shaped_like(update, sample("cryptobot_invoice_paid.json"))
    assert set(update) == {"update_id", "update_type", "request_date", "payload"}
    assert update["update_type"] == "invoice_paid" and ISO_MS.match(update["request_date"])
    payload = update["payload"]
    assert payload["invoice_id"] == created["invoice_id"] and payload["status"] == "paid"
    assert payload["paid_asset"] == "USDT" and payload["paid_amount"] == "1.5"
    assert payload["fee_amount"] == "0.045" and payload["payload"] == "user:42:month"
    assert payload["comment"] == "for the streaks" and ISO_MS.match(payload["paid_at"])
    status, listed = api("getInvoices", invoice_ids=str(created["invoice_id"]))
    [item] = listed["result"]["items"]
    assert item["status"] == "paid" and "fee" not in item and "usd_rate" not in item


def test_fiat_invoice_paid_on_the_page_in_an_accepted_asset(emu, api, http, bot,
                                                            receiver) -> None:
    created = invoice(api, currency_type="fiat", fiat="RUB", amount="100",
                      accepted_assets="USDT,TON", asset=None)
    assert created["accepted_assets"] == ["USDT", "TON"] and "asset" not in created
    page = http.get(created["bot_invoice_url"], timeout=5)
    assert '<option value="TON">' in page.text
    done = http.post(created["bot_invoice_url"], data={"action": "pay", "asset": "TON"},
                     timeout=5)
    assert "Invoice paid." in done.text
    update = verify(receiver.wait_for(1)[0])
    assert_shaped_like(update, sample("cryptobot_invoice_paid_fiat_rub.json"))
    payload = update["payload"]
    assert payload["fiat"] == "RUB" and payload["amount"] == "100"
    assert payload["paid_asset"] == "TON" and payload["paid_fiat_rate"] == "257.6"
    assert payload["paid_amount"] == "0.38819876"
    with pytest.raises(PaymentsEmulatorError) as again:
        bot.pay(created["invoice_id"])
    assert again.value.status == 409


def test_updates_are_signed_with_the_token_of_the_invoices_app(api, bot, receiver) -> None:
    created = invoice(api, token=OTHER_TOKEN)
    status, other_view = api("getInvoices", invoice_ids=str(created["invoice_id"]))
    assert other_view["result"]["items"] == []
    bot.pay(created["invoice_id"])
    verify(receiver.wait_for(1)[0], token=OTHER_TOKEN)


def test_get_invoices_filters_and_pages(api, bot) -> None:
    first, second, third = (invoice(api, amount=str(n)) for n in (1, 2, 3))
    bot.pay(second["invoice_id"])
    ids = ",".join(str(i["invoice_id"]) for i in (first, third))
    _, by_ids = api("getInvoices", invoice_ids=ids)
    assert [i["invoice_id"] for i in by_ids["result"]["items"]] == [third["invoice_id"],
                                                                    first["invoice_id"]]
    _, paid = api("getInvoices", status="paid")
    assert [i["invoice_id"] for i in paid["result"]["items"]] == [second["invoice_id"]]
    _, page = api("getInvoices", offset=1, count=1)
    assert [i["invoice_id"] for i in page["result"]["items"]] == [second["invoice_id"]]
    assert api("getInvoices", count=0)[1]["error"]["name"] == "COUNT_INVALID"
    assert api("getInvoices", invoice_ids="1,x")[1]["error"]["name"] == "INVOICE_IDS_INVALID"


def test_deleted_invoice_disappears(api, http) -> None:
    created = invoice(api)
    assert api("deleteInvoice", invoice_id=created["invoice_id"]) == (200, {"ok": True,
                                                                           "result": True})
    assert api("getInvoices")[1]["result"]["items"] == []
    assert api("deleteInvoice", invoice_id=created["invoice_id"]) == (400, {
        "ok": False, "error": {"code": 400, "name": "INVOICE_NOT_FOUND"}})
    assert http.get(created["bot_invoice_url"], timeout=5).status_code == 404


def test_invoices_expire_after_expires_in(api, bot, receiver) -> None:
    created = invoice(api, expires_in=60)
    bot.advance_clock(61)
    _, listed = api("getInvoices", status="expired")
    assert [i["invoice_id"] for i in listed["result"]["items"]] == [created["invoice_id"]]
    with pytest.raises(PaymentsEmulatorError) as late:
        bot.pay(created["invoice_id"])
    assert late.value.status == 409
    other = invoice(api)
    assert bot.expire(other["invoice_id"])["status"] == "expired"
    assert bot.deliveries() == []


def test_balance_and_rates(api, bot) -> None:
    bot.pay(invoice(api, amount="10")["invoice_id"])
    balance = {b["currency_code"]: b["available"] for b in api("getBalance")[1]["result"]}
    assert balance["USDT"] == "9.7" and balance["TON"] == "0"
    rates = api("getExchangeRates")[1]["result"]
    assert {"is_valid": True, "is_crypto": True, "is_fiat": False, "source": "USDT",
            "target": "RUB", "rate": "80.5"} in rates


# ------------------------------------------------------------------ delivery and duplicates


def test_update_is_retried_after_500_with_the_same_bytes_and_signature(emu, api, bot) -> None:
    with Receiver(statuses=(500,)) as flaky:
        bot.set_webhook(flaky.url)
        created = invoice(api)
        bot.pay(created["invoice_id"])
        [delivery] = bot.wait_delivered(created["invoice_id"])
        hooks = flaky.wait_for(2)
    assert delivery["statuses"] == [500, 200]
    assert hooks[0].body == hooks[1].body
    assert hooks[0].headers[SIGNATURE_HEADER] == hooks[1].headers[SIGNATURE_HEADER]
    verify(hooks[1])


def test_resend_keeps_or_renews_the_update_id(api, bot, receiver) -> None:
    created = invoice(api)
    bot.pay(created["invoice_id"])
    [original] = receiver.wait_for(1)
    bot.resend(created["invoice_id"])
    bot.resend(created["invoice_id"], new_update_id=True)
    hooks = receiver.wait_for(3)
    updates = [verify(hook) for hook in hooks]
    first_id = updates[0]["update_id"]
    assert sum(1 for u in updates if u["update_id"] == first_id) == 2
    assert [h.body for h in hooks].count(original.body) == 2
    assert {u["payload"]["invoice_id"] for u in updates} == {created["invoice_id"]}
    assert len({u["update_id"] for u in updates}) == 2


def test_a_badly_signed_update_can_be_sent_on_purpose(api, bot, receiver) -> None:
    created = invoice(api)
    bot.pay(created["invoice_id"])
    receiver.wait_for(1)
    bot.resend(created["invoice_id"], bad_signature=True)
    forged = receiver.wait_for(2)[1]
    assert forged.body == receiver.received[0].body
    assert forged.headers[SIGNATURE_HEADER] != sign(TOKEN, forged.body)


def test_concurrent_duplicate_updates_are_delivered_n_times(emu, api, bot) -> None:
    created = invoice(api)
    with Receiver(barrier=4) as racing:
        bot.set_webhook(racing.url)
        bot.set_webhook(enabled=False)
        bot.pay(created["invoice_id"])
        bot.set_webhook(enabled=True)
        bot.resend(created["invoice_id"], copies=4, concurrent=True)
        hooks = racing.wait_for(4)
        delivered = bot.wait_delivered(created["invoice_id"], count=4)
    assert len({h.body for h in hooks}) == 1
    assert all(d["statuses"] == [200] for d in delivered)
    assert [d["state"] for d in bot.deliveries(created["invoice_id"])].count("skipped") == 1


# ------------------------------------------------------------------ API faults


def test_5xx_fault_answers_crypto_pay_envelope_and_changes_nothing(api, bot) -> None:
    bot.add_fault("5xx", endpoints=["createInvoice"], count=1)
    assert api("createInvoice", asset="USDT", amount="1") == (500, {
        "ok": False, "error": {"code": 500, "name": "INTERNAL_SERVER_ERROR"}})
    assert bot.invoices() == []
    assert api("getMe")[0] == 200


def test_5xx_after_processing_leaves_the_invoice_created(api, bot) -> None:
    bot.add_fault("5xx", endpoints=["createinvoice"], count=1, after=True, status=504)
    with pytest.raises(json.JSONDecodeError):
        api("createInvoice", asset="USDT", amount="1")
    assert len(bot.invoices()) == 1


def test_timeout_and_outage_faults(emu, http, bot) -> None:
    headers = {"Crypto-Pay-API-Token": TOKEN}
    bot.add_fault("timeout", endpoints=["getInvoices"], count=1)
    with pytest.raises(requests.ReadTimeout):
        http.get(f"{emu.api_url}/getInvoices", headers=headers, timeout=0.3)
    bot.add_fault("outage", count=1)
    with pytest.raises(requests.ConnectionError):
        http.get(f"{emu.api_url}/getMe", headers=headers, timeout=5)
    assert http.get(f"{emu.api_url}/getMe", headers=headers, timeout=5).status_code == 200
    bot.add_fault("429", count=1, retry_after=2)
    limited = http.get(f"{emu.api_url}/getMe", headers=headers, timeout=5)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert [r["endpoint"] for r in bot.requests()] == ["getInvoices", "getMe", "getMe", "getMe"]


def test_reset_forgets_everything(api, bot) -> None:
    bot.pay(invoice(api)["invoice_id"])
    bot.add_fault("5xx", seconds=60)
    bot.reset()
    assert bot.invoices() == [] and bot.deliveries() == [] and bot.faults() == []
    assert invoice(api)["invoice_id"] == 100001


# ------------------------------------------------------------------ command line


def test_command_line_serves_until_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "habitbot.sandbox.cryptopay_emulator", "--port", str(port),
         "--token", TOKEN, "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port) or process.poll() is not None, 15,
                   "the emulator to listen")
        response = requests.get(f"http://127.0.0.1:{port}/api/getMe", timeout=2,
                                headers={"Crypto-Pay-API-Token": TOKEN})
        assert response.json()["result"]["app_id"] == 7777
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
