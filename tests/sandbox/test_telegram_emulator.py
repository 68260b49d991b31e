"""The Telegram Bot API emulator answers like Telegram: envelopes, errors, long polls, limits,
faults and payments, and pyTelegramBotAPI works against it unchanged."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from habitbot.sandbox.emulator_client import EmulatorClient, EmulatorError
from habitbot.sandbox.telegram_emulator import TelegramEmulator
from tests.support.polling import wait_until

TOKEN = "123456:EMULATOR-TEST"
USER = 1001
KEYBOARD = {"inline_keyboard": [[{"text": "Done", "callback_data": "done:1"},
                                 {"text": "Skip", "callback_data": "skip:1"}]]}
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
CONFLICT = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is "
    "running"
)
TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"


@pytest.fixture
def emu() -> Iterator[TelegramEmulator]:
    emulator = TelegramEmulator(tokens=(TOKEN,), conflict_delay=0.0).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def tg(emu: TelegramEmulator) -> Iterator[EmulatorClient]:
    with EmulatorClient(emu.url) as client:
        yield client


@pytest.fixture
def api(emu: TelegramEmulator, http: requests.Session) -> Callable[..., tuple[int, dict]]:
    """Call a Bot API method with a JSON body; returns (HTTP status, envelope)."""

    def call(method: str, **params: Any) -> tuple[int, dict]:
        response = http.post(f"{emu.api_url()}/{method}", json=params, timeout=15)
        return response.status_code, response.json()

    return call


def send(api: Callable[..., tuple[int, dict]], text: str = "hi", **params: Any) -> dict:
    status, body = api("sendMessage", chat_id=USER, text=text, **params)
    assert status == 200, body
    return body["result"]


# ------------------------------------------------------------------ basics and updates


def test_get_me_describes_the_bot(api) -> None:
    status, body = api("getMe")
    assert status == 200 and body["ok"] is True
    assert body["result"]["id"] == 123456
    assert body["result"]["is_bot"] is True
    assert body["result"]["username"] == "habitbot_sandbox_bot"


def test_unknown_token_and_method_get_telegram_errors(emu, http) -> None:
    response = http.get(f"{emu.url}/bot999:WRONG/getMe", timeout=5)
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    response = http.get(f"{emu.api_url()}/sendTelepathy", timeout=5)
    assert response.status_code == 404
    assert response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
    assert http.get(f"{emu.api_url()}/GETME", timeout=5).json()["ok"] is True


def test_long_poll_returns_as_soon_as_a_message_arrives(emu, tg, http) -> None:
    def poll() -> tuple[float, dict]:
        started = time.monotonic()
        body = http.get(f"{emu.api_url()}/getUpdates", params={"timeout": 20}, timeout=30).json()
        return time.monotonic() - started, body

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(poll)
        wait_until(lambda: tg.bots()[0]["polling"])
        injected = tg.inject_message(USER, "/start welcome", language_code="ru")
        elapsed, body = future.result(timeout=10)
    assert elapsed < 5
    [update] = body["result"]
    assert update["update_id"] == injected["update_id"]
    message = update["message"]
    assert message["text"] == "/start welcome"
    assert message["from"]["language_code"] == "ru"
    assert message["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]


def test_offset_confirms_earlier_updates(tg, api) -> None:
    ids = [tg.inject_message(USER, f"m{i}")["update_id"] for i in range(3)]
    assert [u["update_id"] for u in api("getUpdates")[1]["result"]] == ids
    assert [u["update_id"] for u in api("getUpdates", offset=ids[1])[1]["result"]] == ids[1:]
    assert api("getUpdates", limit=1)[1]["result"][0]["update_id"] == ids[1]
    assert api("getUpdates", offset=ids[2] + 1)[1]["result"] == []
    newest = tg.inject_message(USER, "again")["update_id"]
    assert [u["update_id"] for u in api("getUpdates", offset=-1)[1]["result"]] == [newest]


def test_allowed_updates_filter_later_updates(tg, api) -> None:
    assert api("getUpdates", allowed_updates=["message"])[1]["result"] == []
    pressed = tg.press(USER, data="forged")
    written = tg.inject_message(USER, "hello")
    assert pressed["update_id"] is None
    assert [u["update_id"] for u in api("getUpdates")[1]["result"]] == [written["update_id"]]


def test_new_long_poll_terminates_the_older_one_with_409(emu, tg, http) -> None:
    def poll() -> requests.Response:
        return http.get(f"{emu.api_url()}/getUpdates", params={"timeout": 20}, timeout=30)

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(poll)
        wait_until(lambda: tg.bots()[0]["polling"])
        second = pool.submit(poll)
        terminated = first.result(timeout=10)
        assert terminated.status_code == 409
        assert terminated.json() == {"ok": False, "error_code": 409, "description": CONFLICT}
        wait_until(lambda: tg.bots()[0]["polling"])
        tg.inject_message(USER, "for the survivor")
        survivor = second.result(timeout=10)
    assert survivor.status_code == 200
    assert survivor.json()["result"][0]["message"]["text"] == "for the survivor"


# ------------------------------------------------------------------ sending


def test_send_message_accepts_json_form_and_multipart(emu, tg, http) -> None:
    tg.set_limits(chat_burst=10)
    url = f"{emu.api_url()}/sendMessage"
    markup = json.dumps(KEYBOARD)
    as_json = http.post(url, json={"chat_id": USER, "text": "json", "reply_markup": KEYBOARD})
    as_form = http.post(url, data={"chat_id": str(USER), "text": "form", "reply_markup": markup})
    as_multipart = http.post(url, files={"chat_id": (None, str(USER)), "text": (None, "multi"),
                                         "reply_markup": (None, markup)})
    as_query = http.post(url, params={"chat_id": USER, "text": "query"})
    for response in (as_json, as_form, as_multipart, as_query):
        assert response.status_code == 200, response.text
    result = as_form.json()["result"]
    assert result["from"]["is_bot"] is True
    assert result["chat"] == {"id": USER, "first_name": f"User {USER}", "type": "private"}
    assert result["reply_markup"] == KEYBOARD
    messages = tg.messages(USER)
    assert [m["text"] for m in messages] == ["json", "form", "multi", "query"]
    assert all(m["from"] == "bot" and m["kind"] == "text" for m in messages)
    assert messages[2]["reply_markup"] == KEYBOARD


def test_send_photo_and_document_store_name_and_size(emu, tg, http) -> None:
    url = emu.api_url()
    photo = http.post(f"{url}/sendPhoto", data={"chat_id": USER, "caption": "<b>chart</b>",
                                                "parse_mode": "HTML"},
                      files={"photo": ("chart.png", b"\x89PNG" + b"\0" * 60)}).json()
    assert photo["ok"], photo
    assert photo["result"]["caption"] == "chart"
    file_id = photo["result"]["photo"][0]["file_id"]
    again = http.post(f"{url}/sendPhoto", json={"chat_id": USER, "photo": file_id}).json()
    assert again["result"]["photo"][0]["file_id"] == file_id
    document = http.post(f"{url}/sendDocument", data={"chat_id": USER},
                         files={"document": ("export.csv", b"a,b\n1,2\n")}).json()
    assert document["result"]["document"]["file_name"] == "export.csv"
    assert document["result"]["document"]["file_size"] == 8
    bad = http.post(f"{url}/sendDocument", json={"chat_id": USER, "document": "nonsense"})
    assert bad.json()["description"] == "Bad Request: wrong file identifier/HTTP URL specified"
    kinds = [(m["kind"], m.get("file_name")) for m in tg.messages(USER)]
    assert kinds == [("photo", "chart.png"), ("photo", "chart.png"), ("document", "export.csv")]


@pytest.mark.parametrize(
    ("text", "description"),
    [
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("<p>para</p>", 'Unsupported start tag "p" at byte offset 0'),
        ("<b>bold", "Can't find end tag corresponding to start tag b"),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("</b>", "Unexpected end tag at byte offset 0"),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
    ],
)
def test_malformed_html_cannot_be_parsed(api, text: str, description: str) -> None:
    status, body = api("sendMessage", chat_id=USER, text=text, parse_mode="HTML")
    assert status == 400
    assert body["description"] == f"Bad Request: can't parse entities: {description}"


def test_html_entities_and_supported_tags(tg, api) -> None:
    text = ('<b>b</b><strong>s</strong><i>i</i><u>u</u><s>x</s><tg-spoiler>p</tg-spoiler>'
            '<a href="https://t.me/x">link</a><code>c</code><pre>p</pre>'
            '<blockquote>q</blockquote> &lt;&gt;&amp;&quot;&#39; AT&T')
    result = send(api, text, parse_mode="HTML")
    assert result["text"] == "bsiuxplinkcpq <>&\"' AT&T"
    types = {e["type"] for e in result["entities"]}
    assert {"bold", "italic", "underline", "strikethrough", "spoiler", "text_link", "code",
            "pre", "blockquote"} <= types


def test_strict_mode_also_refuses_a_bare_ampersand(http) -> None:
    with TelegramEmulator(tokens=(TOKEN,), strict_html_entities=True) as strict:
        body = http.post(f"{strict.api_url()}/sendMessage", timeout=5, json={
            "chat_id": USER, "text": "AT&T", "parse_mode": "HTML"}).json()
    assert body["description"] == (
        "Bad Request: can't parse entities: Unsupported HTML entity at byte offset 2")


def test_length_is_counted_after_entity_parsing(api) -> None:
    assert send(api, "<b>" + "я" * 4096 + "</b>", parse_mode="HTML")["text"] == "я" * 4096
    status, body = api("sendMessage", chat_id=USER, text="x" * 4097)
    assert (status, body["description"]) == (400, "Bad Request: message is too long")
    status, body = api("sendMessage", chat_id=USER, text="<b> </b>", parse_mode="HTML")
    assert (status, body["description"]) == (400, "Bad Request: message text is empty")


def test_markdown_v2_reserved_characters_must_be_escaped(api) -> None:
    status, body = api("sendMessage", chat_id=USER, text="Done 1.5", parse_mode="MarkdownV2")
    assert status == 400
    assert body["description"] == ("Bad Request: can't parse entities: Character '.' is "
                                   "reserved and must be escaped with the preceding '\\'")
    assert send(api, r"*Done* 1\.5", parse_mode="MarkdownV2")["text"] == "Done 1.5"


@pytest.mark.parametrize("data", ["x" * 65, ""])
def test_callback_data_must_be_1_to_64_bytes(api, data: str) -> None:
    markup = {"inline_keyboard": [[{"text": "B", "callback_data": data}]]}
    status, body = api("sendMessage", chat_id=USER, text="t", reply_markup=markup)
    assert (status, body["description"]) == (400, "Bad Request: BUTTON_DATA_INVALID")


def test_unknown_chat_is_not_found_unless_auto_created(http) -> None:
    with TelegramEmulator(tokens=(TOKEN,), auto_create_chats=False) as strict:
        url = f"{strict.api_url()}/sendMessage"
        body = http.post(url, json={"chat_id": 777, "text": "hi"}, timeout=5).json()
        assert body == {"ok": False, "error_code": 400,
                        "description": "Bad Request: chat not found"}
        strict.add_user(777, "Known")
        assert http.post(url, json={"chat_id": 777, "text": "hi"}, timeout=5).json()["ok"]


# ------------------------------------------------------------------ edits and callbacks


def test_edits_apply_in_transcript_and_unchanged_edit_is_refused(tg, api) -> None:
    sent = send(api, "Drink water?", reply_markup=KEYBOARD)
    target = {"chat_id": USER, "message_id": sent["message_id"]}
    status, body = api("editMessageText", text="Drink water?", reply_markup=KEYBOARD, **target)
    assert (status, body["description"]) == (400, NOT_MODIFIED)
    status, body = api("editMessageText", text="<b>Done</b> ✅", parse_mode="HTML",
                       reply_markup=KEYBOARD, **target)
    assert status == 200 and body["result"]["text"] == "Done ✅" and "edit_date" in body["result"]
    assert api("editMessageReplyMarkup", **target)[0] == 200
    status, body = api("editMessageText", chat_id=USER, message_id=999, text="x")
    assert (status, body["description"]) == (400, "Bad Request: message to edit not found")
    [message] = tg.messages(USER)
    assert (message["text"], message["edited"], message["reply_markup"]) == ("Done ✅", True, None)
    assert api("deleteMessage", **target)[1]["result"] is True
    assert tg.messages(USER) == []
    assert tg.transcript(USER, include_deleted=True)["messages"][0]["deleted"] is True


def test_button_press_reaches_the_bot_and_answers_are_recorded(emu, tg, api) -> None:
    sent = send(api, "Did you run today?", reply_markup=KEYBOARD)
    pressed = tg.press(USER, sent["message_id"], button_text="Done")
    [update] = api("getUpdates")[1]["result"]
    query = update["callback_query"]
    assert query["id"] == pressed["callback_query_id"]
    assert query["data"] == "done:1"
    assert query["message"]["message_id"] == sent["message_id"]
    assert query["from"]["id"] == USER
    assert api("answerCallbackQuery", callback_query_id=query["id"], text="Saved",
               show_alert=True) == (200, {"ok": True, "result": True})
    answer = tg.wait_for_callback_answer(USER, query["id"])
    assert (answer["text"], answer["show_alert"], answer["data"]) == ("Saved", True, "done:1")
    status, body = api("answerCallbackQuery", callback_query_id=query["id"])
    assert (status, body["description"]) == (400, TOO_OLD)

    stale = tg.press(USER, sent["message_id"], data="forged:42")["callback_query_id"]
    emu.world.bots[TOKEN].queries[stale].created -= 16
    assert api("answerCallbackQuery", callback_query_id=stale)[1]["description"] == TOO_OLD
    assert api("answerCallbackQuery", callback_query_id="12345")[1]["description"] == TOO_OLD


def test_blocked_user_gets_403_until_they_write_again(tg, api) -> None:
    tg.add_user(USER, "Anna")
    tg.block(USER)
    status, body = api("sendMessage", chat_id=USER, text="reminder")
    assert status == 403
    assert body == {"ok": False, "error_code": 403,
                    "description": "Forbidden: bot was blocked by the user"}
    updates = api("getUpdates")[1]["result"]
    assert updates[0]["my_chat_member"]["new_chat_member"]["status"] == "kicked"
    tg.inject_message(USER, "/start")
    assert api("sendMessage", chat_id=USER, text="welcome back")[0] == 200


# ------------------------------------------------------------------ flood limits


def test_per_chat_limit_answers_429_with_retry_after(tg, api) -> None:
    for i in range(3):
        send(api, f"burst {i}")
    status, body = api("sendMessage", chat_id=USER, text="one too many")
    assert status == 429
    retry_after = body["parameters"]["retry_after"]
    assert retry_after >= 1
    assert body["description"] == f"Too Many Requests: retry after {retry_after}"
    stats = tg.stats()
    assert (stats["sent"], stats["rate_limited"], stats["sent_per_chat"]) == (3, 1, {str(USER): 3})


def test_global_limit_and_paid_broadcast(tg, api) -> None:
    tg.set_limits(global_rate=5)
    for chat_id in range(2001, 2006):
        assert api("sendMessage", chat_id=chat_id, text="news")[0] == 200
    status, body = api("sendMessage", chat_id=2006, text="news")
    assert status == 429 and body["parameters"]["retry_after"] >= 1
    status, _ = api("sendMessage", chat_id=2006, text="news", allow_paid_broadcast=True)
    assert status == 200
    tg.set_limits(global_rate=1000)
    assert api("sendMessage", chat_id=2007, text="news")[0] == 200
    assert tg.stats()["max_sent_in_1s"] == 7


# ------------------------------------------------------------------ faults


def test_5xx_fault_answers_the_envelope_then_clears(tg, api) -> None:
    tg.add_fault("5xx", methods=["sendMessage"], count=1)
    assert api("sendMessage", chat_id=USER, text="x") == (
        502, {"ok": False, "error_code": 502, "description": "Bad Gateway"})
    assert api("sendMessage", chat_id=USER, text="x")[0] == 200
    tg.add_fault("5xx", status=503)
    assert api("getMe")[0] == 503
    assert tg.clear_faults() == 2
    assert api("getMe")[0] == 200


def test_401_and_429_faults(tg, api) -> None:
    tg.add_fault("401", methods=["getMe"], count=1)
    assert api("getMe") == (401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
    tg.add_fault("429", retry_after=7, count=1)
    assert api("sendMessage", chat_id=USER, text="x") == (429, {
        "ok": False, "error_code": 429, "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7}})
    assert tg.stats()["faults"] == {"401": 1, "429": 1}


def test_outage_drops_connections_until_cleared(emu, tg, http) -> None:
    tg.add_fault("outage")
    with pytest.raises(requests.ConnectionError):
        http.get(f"{emu.api_url()}/getMe", timeout=5)
    tg.clear_faults()
    assert http.get(f"{emu.api_url()}/getMe", timeout=5).json()["ok"]


def test_timeout_fault_holds_the_request_until_cleared(emu, tg, http) -> None:
    tg.add_fault("timeout", methods=["getMe"])
    with pytest.raises(requests.ReadTimeout):
        http.get(f"{emu.api_url()}/getMe", timeout=0.3)
    assert http.post(f"{emu.api_url()}/sendMessage", json={"chat_id": USER, "text": "ok"},
                     timeout=5).json()["ok"]
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(http.get, f"{emu.api_url()}/getMe", timeout=10)
        wait_until(lambda: tg.stats()["faults"].get("timeout") == 2)
        tg.clear_faults()
        with pytest.raises(requests.ConnectionError):
            held.result(timeout=5)
    assert http.get(f"{emu.api_url()}/getMe", timeout=5).json()["ok"]


def test_control_errors_are_reported(tg) -> None:
    with pytest.raises(EmulatorError) as error:
        tg.add_fault("meteor")
    assert error.value.status == 400
    with pytest.raises(EmulatorError) as error:
        tg.press(USER, 1, button_text="Nope")
    assert error.value.status == 404


# ------------------------------------------------------------------ commands and payments


def test_set_my_commands_per_language_and_scope(tg, api) -> None:
    english = [{"command": "start", "description": "Start"}, {"command": "new",
                                                             "description": "New habit"}]
    russian = [{"command": "start", "description": "Начать"}]
    assert api("setMyCommands", commands=english)[1]["result"] is True
    assert api("setMyCommands", commands=json.dumps(russian), language_code="ru")[0] == 200
    assert api("setMyCommands", commands=russian, language_code="ru",
               scope={"type": "all_private_chats"})[0] == 200
    assert api("getMyCommands", language_code="ru")[1]["result"] == russian
    assert api("getMyCommands")[1]["result"] == english
    assert api("getMyCommands", language_code="de")[1]["result"] == []
    stored = {(e["scope"]["type"], e["language_code"]) for e in tg.commands()}
    assert stored == {("default", ""), ("default", "ru"), ("all_private_chats", "ru")}
    status, body = api("setMyCommands", commands=[{"command": "Start", "description": "x"}])
    assert (status, body["description"]) == (400, "Bad Request: BOT_COMMAND_INVALID")


def test_stars_invoice_pre_checkout_payment_and_refund(emu, tg, api, http) -> None:
    form = {"chat_id": USER, "title": "Premium", "description": "30 days of Premium",
            "payload": "premium:30:u1001", "provider_token": "", "currency": "XTR",
            "prices": json.dumps([{"label": "Premium", "amount": 250}])}
    sent = http.post(f"{emu.api_url()}/sendInvoice", data=form, timeout=5).json()
    assert sent["ok"], sent
    assert sent["result"]["invoice"]["total_amount"] == 250
    status, body = api("sendInvoice", **{**form, "currency": "RUB"})
    assert (status, body["description"]) == (400, "Bad Request: PAYMENT_PROVIDER_INVALID")

    query_id = tg.pre_checkout(USER, invoice_message_id=sent["result"]["message_id"])[
        "pre_checkout_query_id"]
    [update] = api("getUpdates")[1]["result"]
    assert update["pre_checkout_query"]["invoice_payload"] == "premium:30:u1001"
    assert update["pre_checkout_query"]["currency"] == "XTR"
    assert api("answerPreCheckoutQuery", pre_checkout_query_id=query_id, ok=True)[0] == 200
    assert tg.wait_for_pre_checkout_answer(USER, query_id)["ok"] is True

    paid = tg.pay(USER, invoice_message_id=sent["result"]["message_id"],
                  pre_checkout_query_id=query_id)
    updates = api("getUpdates", offset=update["update_id"] + 1)[1]["result"]
    payment = updates[0]["message"]["successful_payment"]
    assert payment["telegram_payment_charge_id"] == paid["telegram_payment_charge_id"]
    assert (payment["total_amount"], payment["invoice_payload"]) == (250, "premium:30:u1001")
    second = tg.pay(USER, invoice_payload="premium:30:u1001", currency="XTR", total_amount=250)
    assert second["telegram_payment_charge_id"] != paid["telegram_payment_charge_id"]

    charge = {"user_id": USER, "telegram_payment_charge_id": paid["telegram_payment_charge_id"]}
    assert api("refundStarPayment", **charge) == (200, {"ok": True, "result": True})
    assert api("refundStarPayment", **charge)[1]["description"] == (
        "Bad Request: CHARGE_ALREADY_REFUNDED")
    refunded = {p["telegram_payment_charge_id"]: p["refunded"] for p in tg.payments()}
    assert refunded == {paid["telegram_payment_charge_id"]: True,
                        second["telegram_payment_charge_id"]: False}


# ------------------------------------------------------------------ pyTelegramBotAPI


def test_telebot_works_against_the_emulator(emu, tg, monkeypatch) -> None:
    from telebot import TeleBot, apihelper, types, util
    from telebot.apihelper import ApiTelegramException

    with requests.Session() as session:
        monkeypatch.setattr(apihelper, "API_URL", emu.url + "/bot{0}/{1}")
        monkeypatch.setattr(util.thread_local, "req_session", session, raising=False)
        bot = TeleBot(TOKEN, threaded=False)
        assert bot.get_me().username == "habitbot_sandbox_bot"
        markup = types.InlineKeyboardMarkup()
        markup.add(types.InlineKeyboardButton("Done", callback_data="done:7"))
        message = bot.send_message(USER, "<b>Water</b>", parse_mode="HTML", reply_markup=markup)
        assert message.text == "Water"
        assert message.reply_markup is not None
        assert message.reply_markup.keyboard[0][0].callback_data == "done:7"
        tg.inject_message(USER, "/stats")
        [update] = bot.get_updates(timeout=5, long_polling_timeout=2)
        assert update.message is not None and update.message.text == "/stats"
        tg.block(USER)
        with pytest.raises(ApiTelegramException) as error:
            bot.send_message(USER, "reminder")
        assert error.value.error_code == 403
        assert error.value.description == "Forbidden: bot was blocked by the user"


def test_a_file_sent_again_keeps_its_unique_id_and_big_files_cannot_be_fetched(
        emu, tg, api) -> None:
    import base64

    def upload(content: bytes) -> dict:
        sent = tg.inject_message(USER, None, document={
            "file_name": "loop.zip", "content_base64": base64.b64encode(content).decode()})
        return next(m for m in tg.messages(USER, sender="user")
                    if m["message_id"] == sent["message_id"])["document"]

    first, again, other = upload(b"a,b\n"), upload(b"a,b\n"), upload(b"c,d\n")
    assert first["file_id"] != again["file_id"]
    assert first["file_unique_id"] == again["file_unique_id"] != other["file_unique_id"]
    big = upload(b"x" * (21 << 20))
    assert api("getFile", file_id=big["file_id"]) == (
        400, {"ok": False, "error_code": 400, "description": "Bad Request: file is too big"})
    assert api("getFile", file_id=first["file_id"])[0] == 200
