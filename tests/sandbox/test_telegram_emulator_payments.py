"""The Telegram emulator's payments: Stars invoices, the payer's checkout (pre-checkout query,
the bot's answer within Telegram's deadline, then the payment), answerPreCheckoutQuery and
refundStarPayment with Telegram's errors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from habitbot.sandbox.emulator_client import EmulatorClient, EmulatorError
from habitbot.sandbox.telegram_emulator import TelegramEmulator
from tests.support.polling import wait_until

TOKEN = "123456:PAYMENTS-TEST"
USER, OTHER = 1001, 1002
TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
STARS = {"title": "Premium", "description": "30 days of premium", "provider_token": "",
         "currency": "XTR", "prices": [{"label": "Premium", "amount": 150}]}


@pytest.fixture
def emu() -> Iterator[TelegramEmulator]:
    emulator = TelegramEmulator(tokens=(TOKEN,), conflict_delay=0.0).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def tg(emu: TelegramEmulator) -> Iterator[EmulatorClient]:
    with EmulatorClient(emu.url) as client:
        client.add_user(USER, "Payer")
        client.add_user(OTHER, "Other")
        yield client


@pytest.fixture
def api(emu: TelegramEmulator) -> Iterator[Callable[..., tuple[int, dict]]]:
    with requests.Session() as http:
        def call(method: str, **params: Any) -> tuple[int, dict]:
            response = http.post(f"{emu.api_url()}/{method}", json=params, timeout=15)
            return response.status_code, response.json()

        yield call


def invoice(api, payload: str = "stars:1", chat_id: int = USER, **changes: Any) -> dict:
    status, body = api("sendInvoice", chat_id=chat_id, payload=payload, **{**STARS, **changes})
    assert status == 200, body
    return body["result"]


class Merchant:
    """A bot that long-polls and answers pre-checkout queries: approves, declines payloads
    starting with "decline", leaves "silent" unanswered; records successful payments."""

    def __init__(self, api: Callable[..., tuple[int, dict]]) -> None:
        self.api = api
        self.payments: list[dict] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> Merchant:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)

    def run(self) -> None:
        offset = 0
        while not self.stopping.is_set():
            _, body = self.api("getUpdates", offset=offset, timeout=1)
            for update in body.get("result", []):
                offset = update["update_id"] + 1
                query = update.get("pre_checkout_query")
                if query and query["invoice_payload"].startswith("decline"):
                    self.api("answerPreCheckoutQuery", pre_checkout_query_id=query["id"],
                             ok=False, error_message="Sold out")
                elif query and query["invoice_payload"] != "silent":
                    self.api("answerPreCheckoutQuery", pre_checkout_query_id=query["id"],
                             ok=True)
                message = update.get("message") or {}
                if "successful_payment" in message:
                    self.payments.append(message["successful_payment"])


def test_stars_invoice_is_validated_like_telegram(api) -> None:
    sent = invoice(api)
    assert sent["invoice"] == {"title": "Premium", "description": "30 days of premium",
                               "start_parameter": "", "currency": "XTR", "total_amount": 150}
    for changes in ({"provider_token": "381764678:TEST:1"},
                    {"prices": [{"label": "a", "amount": 100}, {"label": "b", "amount": 50}]},
                    {"max_tip_amount": 10}):
        status, body = api("sendInvoice", chat_id=USER, payload="x", **{**STARS, **changes})
        assert (status, body["description"]) == (400, "Bad Request: STARS_INVOICE_INVALID")
    status, body = api("sendInvoice", chat_id=USER, payload="", **STARS)
    assert (status, body["description"]) == (400, "Bad Request: INVOICE_PAYLOAD_INVALID")


def test_checkout_pays_after_the_bot_approves(api, tg) -> None:
    sent = invoice(api, "stars:7")
    with Merchant(api) as merchant:
        result = tg.checkout(USER, invoice_message_id=sent["message_id"])
        assert result["outcome"] == "paid"
        charge = result["telegram_payment_charge_id"]
        [paid] = wait_until(lambda: merchant.payments, what="the successful_payment update")
    assert paid["telegram_payment_charge_id"] == charge
    assert (paid["total_amount"], paid["currency"], paid["invoice_payload"]) == (
        150, "XTR", "stars:7")
    [shown] = [m for m in tg.messages(USER) if m["kind"] == "successful_payment"]
    assert shown["successful_payment"]["telegram_payment_charge_id"] == charge
    [recorded] = tg.payments()
    assert (recorded["user_id"], recorded["refunded"]) == (USER, False)
    answer = tg.pre_checkout_answer(result["pre_checkout_query_id"])
    assert answer["answered"] and answer["ok"]


def test_declined_checkout_takes_no_payment(api, tg) -> None:
    sent = invoice(api, "decline:1")
    with Merchant(api):
        result = tg.checkout(USER, invoice_message_id=sent["message_id"])
    assert (result["outcome"], result["error_message"]) == ("declined", "Sold out")
    assert tg.payments() == []
    assert all(m["kind"] != "successful_payment" for m in tg.messages(USER))


def test_unanswered_checkout_times_out_without_payment(api, tg) -> None:
    sent = invoice(api, "silent")
    with Merchant(api):
        result = tg.checkout(USER, invoice_message_id=sent["message_id"], timeout=0.5)
    assert result["outcome"] == "timeout"
    assert tg.payments() == []


def test_answer_after_the_deadline_is_refused(api, tg, emu) -> None:
    emu.world.pre_checkout_ttl = 0.0
    query_id = tg.pre_checkout(USER, invoice_payload="p", currency="XTR",
                               total_amount=5)["pre_checkout_query_id"]
    status, body = api("answerPreCheckoutQuery", pre_checkout_query_id=query_id, ok=True)
    assert (status, body["description"]) == (400, TOO_OLD)
    with pytest.raises(EmulatorError) as refused:
        tg.pay(USER, invoice_payload="p", currency="XTR", total_amount=5,
               pre_checkout_query_id=query_id)
    assert refused.value.status == 409
    assert tg.payments() == []


def test_answer_pre_checkout_query_validation(api, tg) -> None:
    query_id = tg.pre_checkout(USER, invoice_payload="p", currency="XTR",
                               total_amount=5)["pre_checkout_query_id"]
    assert api("answerPreCheckoutQuery", pre_checkout_query_id=query_id)[1]["description"] \
        == 'Bad Request: parameter "ok" is required'
    assert api("answerPreCheckoutQuery", pre_checkout_query_id=query_id, ok=False)[1][
        "description"] == "Bad Request: ERROR_MESSAGE_EMPTY"
    assert api("answerPreCheckoutQuery", pre_checkout_query_id="123", ok=True)[1][
        "description"] == TOO_OLD
    assert api("answerPreCheckoutQuery", pre_checkout_query_id=query_id, ok=True)[0] == 200
    assert api("answerPreCheckoutQuery", pre_checkout_query_id=query_id, ok=True)[1][
        "description"] == TOO_OLD


def test_an_approved_query_pays_its_own_invoice_once(api, tg) -> None:
    query_id = tg.pre_checkout(USER, invoice_payload="p", currency="XTR",
                               total_amount=5)["pre_checkout_query_id"]
    api("answerPreCheckoutQuery", pre_checkout_query_id=query_id, ok=True)
    terms = {"invoice_payload": "p", "currency": "XTR", "total_amount": 5}
    with pytest.raises(EmulatorError) as other_invoice:
        tg.pay(USER, pre_checkout_query_id=query_id, **{**terms, "total_amount": 1})
    assert other_invoice.value.status == 409
    with pytest.raises(EmulatorError) as other_user:
        tg.pay(OTHER, pre_checkout_query_id=query_id, **terms)
    assert other_user.value.status == 404
    tg.pay(USER, pre_checkout_query_id=query_id, **terms)
    with pytest.raises(EmulatorError) as twice:
        tg.pay(USER, pre_checkout_query_id=query_id, **terms)
    assert twice.value.status == 409
    assert len(tg.payments()) == 1


def test_replayed_payment_message_keeps_its_charge_id(api, tg) -> None:
    paid = tg.pay(USER, invoice_payload="p", currency="XTR", total_amount=5)
    replay = tg.replay_payment(USER, paid["telegram_payment_charge_id"])
    assert replay["message_id"] != paid["message_id"]
    charges = [m["successful_payment"]["telegram_payment_charge_id"]
               for m in tg.messages(USER) if m["kind"] == "successful_payment"]
    assert charges == [paid["telegram_payment_charge_id"]] * 2
    assert len(tg.payments()) == 1
    for user, charge in ((USER, "stxTnope"), (OTHER, paid["telegram_payment_charge_id"])):
        with pytest.raises(EmulatorError) as unknown:
            tg.replay_payment(user, charge)
        assert unknown.value.status == 404


def test_refund_star_payment_errors(api, tg) -> None:
    paid = tg.pay(USER, invoice_payload="p", currency="XTR", total_amount=5)
    charge = paid["telegram_payment_charge_id"]
    cases = [({"user_id": USER, "telegram_payment_charge_id": ""}, "CHARGE_ID_EMPTY"),
             ({"user_id": USER, "telegram_payment_charge_id": "stxTnope"}, "CHARGE_NOT_FOUND"),
             ({"user_id": OTHER, "telegram_payment_charge_id": charge}, "CHARGE_NOT_FOUND")]
    for params, error in cases:
        status, body = api("refundStarPayment", **params)
        assert (status, body["ok"], body["description"]) == (400, False, f"Bad Request: {error}")
    assert tg.payments()[0]["refunded"] is False
    assert api("refundStarPayment", user_id=USER, telegram_payment_charge_id=charge) == (
        200, {"ok": True, "result": True})
    status, body = api("refundStarPayment", user_id=USER, telegram_payment_charge_id=charge)
    assert (status, body["description"]) == (400, "Bad Request: CHARGE_ALREADY_REFUNDED")


def test_checkout_control_refuses_bad_input(tg) -> None:
    with pytest.raises(EmulatorError) as no_invoice:
        tg.checkout(USER, invoice_message_id=999)
    assert no_invoice.value.status == 404
    with pytest.raises(EmulatorError) as missing:
        tg.checkout(USER, invoice_payload="p")
    assert missing.value.status == 400 and "currency" in missing.value.message
    with pytest.raises(EmulatorError) as bad_timeout:
        tg._request("POST", f"users/{USER}/checkout", {"invoice_payload": "p", "currency": "XTR",
                                                       "total_amount": 5, "timeout": "soon"})
    assert bad_timeout.value.status == 400
    assert tg.payments() == []


def test_star_transactions_list_payments_and_refunds_in_order(api, tg) -> None:
    first = tg.pay(USER, invoice_payload="stars:1", currency="XTR", total_amount=5)
    second = tg.pay(OTHER, invoice_payload="stars:2", currency="XTR", total_amount=7)
    tg.pay(USER, invoice_payload="card", currency="RUB", total_amount=100)  # not in Stars
    api("refundStarPayment", user_id=USER,
        telegram_payment_charge_id=first["telegram_payment_charge_id"])
    status, body = api("getStarTransactions")
    assert status == 200
    listed = [(t["id"], t["amount"], "source" in t, "receiver" in t)
              for t in body["result"]["transactions"]]
    assert listed == [(first["telegram_payment_charge_id"], 5, True, False),
                      (second["telegram_payment_charge_id"], 7, True, False),
                      (first["telegram_payment_charge_id"], 5, False, True)]
    source = body["result"]["transactions"][1]["source"]
    assert (source["type"], source["user"]["id"], source["invoice_payload"]) == (
        "user", OTHER, "stars:2")
    assert [t["id"] for t in api("getStarTransactions", offset=1, limit=1)[1]["result"][
        "transactions"]] == [second["telegram_payment_charge_id"]]
    for params, error in (({"limit": 0}, "LIMIT_INVALID"), ({"limit": 101}, "LIMIT_INVALID"),
                          ({"offset": -1}, "OFFSET_INVALID")):
        status, body = api("getStarTransactions", **params)
        assert (status, body["description"]) == (400, f"Bad Request: {error}")
