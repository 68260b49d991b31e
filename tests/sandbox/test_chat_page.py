"""The sandbox chat page: served by the Telegram emulator at ``/`` and driven in headless
Chromium against a tiny bot that long-polls the emulator."""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from habitbot.sandbox.telegram_emulator import TelegramEmulator
from habitbot.sandbox.telegram_emulator_routes import page_asset
from tests.support.browser import chromium, wait

TOKEN = "123456:CHAT-PAGE-TEST"
SCREENSHOT = Path("/tmp/chat_page.png")
EVIL_TEXT = '<b>not bold</b> & <script>window.__pwned = 1</script> "quoted" <i>'


# ------------------------------------------------------------------ a tiny bot


class EchoBot:
    """Long-polls the emulator and answers through plain Bot API calls.

    Text gets an HTML echo with two callback buttons and a URL button; ``done`` edits that
    message and answers with a toast, ``later`` answers with an alert; a location and a
    sticker get a short reply. ``/buy`` sends a Stars invoice (``/buy decline`` one whose
    pre-checkout query the bot refuses); a successful payment is recorded and thanked for.
    """

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.errors: list[str] = []
        self.payments: list[tuple[str, int, str]] = []
        self.stopping = threading.Event()
        self.session = requests.Session()
        self.thread = threading.Thread(target=self.run, name="echo-bot", daemon=True)

    def __enter__(self) -> EchoBot:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self.session.close()

    def call(self, method: str, **params: Any) -> Any:
        response = self.session.post(f"{self.api_url}/{method}", json=params, timeout=10)
        body = response.json()
        if not body.get("ok"):
            raise RuntimeError(f"{method} failed: {body}")
        return body["result"]

    def run(self) -> None:
        offset = 0
        while not self.stopping.is_set():
            try:
                for update in self.call("getUpdates", offset=offset, timeout=1):
                    offset = update["update_id"] + 1
                    self.handle(update)
            except (requests.RequestException, RuntimeError, ValueError) as exc:
                if not self.stopping.is_set():
                    self.errors.append(repr(exc))
                return

    def handle(self, update: dict[str, Any]) -> None:
        if "message" in update:
            self.on_message(update["message"])
        elif "callback_query" in update:
            self.on_callback(update["callback_query"])
        elif "pre_checkout_query" in update:
            query = update["pre_checkout_query"]
            if query["invoice_payload"] == "decline":
                self.call("answerPreCheckoutQuery", pre_checkout_query_id=query["id"],
                          ok=False, error_message="Sold out, sorry")
            else:
                self.call("answerPreCheckoutQuery", pre_checkout_query_id=query["id"], ok=True)

    def on_message(self, message: dict[str, Any]) -> None:
        chat_id = message["chat"]["id"]
        if "successful_payment" in message:
            paid = message["successful_payment"]
            self.payments.append((paid["invoice_payload"], paid["total_amount"],
                                  paid["currency"]))
            self.call("sendMessage", chat_id=chat_id,
                      text=f"Thanks for {paid['total_amount']} stars")
        elif message.get("text", "").startswith("/buy"):
            payload = "decline" if "decline" in message["text"] else "ok"
            self.call("sendInvoice", chat_id=chat_id, title="Stars pack",
                      description="Fifty stars of fun", payload=payload, provider_token="",
                      currency="XTR", prices=[{"label": "Pack", "amount": 50}])
        elif "text" in message:
            keyboard = {"inline_keyboard": [
                [{"text": "Done", "callback_data": "done"},
                 {"text": "Later", "callback_data": "later"}],
                [{"text": "Docs", "url": "https://example.org/docs"}],
            ]}
            text = f"<b>Echo</b>: <code>{html.escape(message['text'])}</code>"
            self.call("sendMessage", chat_id=chat_id, text=text, parse_mode="HTML",
                      reply_markup=keyboard)
        elif "location" in message:
            point = message["location"]
            self.call("sendMessage", chat_id=chat_id,
                      text=f"Location: {point['latitude']:.3f}, {point['longitude']:.3f}")
        elif "sticker" in message:
            self.call("sendMessage", chat_id=chat_id,
                      text=f"Nice sticker {message['sticker']['emoji']}")

    def on_callback(self, query: dict[str, Any]) -> None:
        if query["data"] == "done":
            self.call("editMessageText", chat_id=query["message"]["chat"]["id"],
                      message_id=query["message"]["message_id"],
                      text="<b>Done</b> \N{WHITE HEAVY CHECK MARK} <i>marked</i>",
                      parse_mode="HTML")
            self.call("answerCallbackQuery", callback_query_id=query["id"],
                      text="Marked as done")
        elif query["data"] == "later":
            self.call("answerCallbackQuery", callback_query_id=query["id"],
                      text="Are you sure?", show_alert=True)


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def emu() -> Iterator[TelegramEmulator]:
    emulator = TelegramEmulator(tokens=(TOKEN,), global_rate=0, chat_rate=0).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def bot(emu: TelegramEmulator) -> Iterator[EchoBot]:
    with EchoBot(emu.api_url()) as echo:
        yield echo
    assert echo.errors == []


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.fixture
def page(browser: WebDriver, emu: TelegramEmulator) -> WebDriver:
    browser.get(f"{emu.url}/")
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid=bot-status]")
         .get_attribute("data-state") in ("online", "offline"))
    return browser


def by_testid(root: WebDriver | WebElement, testid: str) -> list[WebElement]:
    return root.find_elements(By.CSS_SELECTOR, f"[data-testid={testid}]")


def messages(driver: WebDriver, sender: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, f"[data-testid=message][data-from={sender}]")


def message_text(message: WebElement) -> str:
    return message.find_element(By.CSS_SELECTOR, "[data-testid=message-text]").text


def create_user(driver: WebDriver, user_id: int, name: str, language: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, "[data-testid=new-user-id]")
    field.clear()
    field.send_keys(str(user_id))
    driver.find_element(By.CSS_SELECTOR, "[data-testid=new-user-name]").send_keys(name)
    Select(driver.find_element(By.CSS_SELECTOR, "[data-testid=new-user-lang]")) \
        .select_by_value(language)
    driver.find_element(By.CSS_SELECTOR, "[data-testid=create-user]").click()
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid=chat-name]").text
         == name)


def type_message(driver: WebDriver, text: str) -> None:
    box = driver.find_element(By.CSS_SELECTOR, "[data-testid=message-input]")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


# ------------------------------------------------------------------ serving the page


def test_page_and_assets_are_served_with_a_strict_policy(
    emu: TelegramEmulator, http: requests.Session
) -> None:
    response = http.get(f"{emu.url}/", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert 'src="static/chat.js"' in response.text
    assert 'data-testid="message-input"' in response.text
    for name, content_type in [("chat.js", "text/javascript"), ("chat.css", "text/css"),
                               ("favicon.svg", "image/svg+xml")]:
        asset = http.get(f"{emu.url}/static/{name}", timeout=5)
        assert asset.status_code == 200, name
        assert asset.headers["Content-Type"].startswith(content_type)
        assert asset.headers["X-Content-Type-Options"] == "nosniff"


def test_page_refuses_other_paths_and_methods(
    emu: TelegramEmulator, http: requests.Session
) -> None:
    for path in ("/static/missing.js", "/static/../telegram_emulator.py",
                 "/static/%2e%2e/telegram_emulator.py", "/static/a/chat.js",
                 "/static/.hidden", "/static/", "/favicon.ico"):
        response = http.get(f"{emu.url}{path}", timeout=5)
        assert response.status_code == 404, path
        assert response.json()["ok"] is False
    response = http.post(f"{emu.url}/", json={}, timeout=5)
    assert response.status_code == 405
    assert http.get(f"{emu.url}/control/health", timeout=5).json() == {"ok": True}


def test_page_asset_serves_only_known_file_types(tmp_path: Path) -> None:
    (tmp_path / "app.js").write_text("1", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("2", encoding="utf-8")
    (tmp_path / "index.html").write_text("<p>", encoding="utf-8")
    assert page_asset("/static/app.js", tmp_path) == (b"1", "text/javascript; charset=utf-8")
    assert page_asset("/", tmp_path) == (b"<p>", "text/html; charset=utf-8")
    assert page_asset("/static/notes.txt", tmp_path) is None
    assert page_asset("/static/absent.js", tmp_path) is None
    assert page_asset("/elsewhere", tmp_path) is None


# ------------------------------------------------------------------ in the browser


def test_chat_with_the_bot_in_the_browser(page: WebDriver, bot: EchoBot) -> None:
    create_user(page, 4242, "Ada", "en")
    assert "en" in page.find_element(By.CSS_SELECTOR, "[data-testid=chat-sub]").text
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR,
                                         "[data-testid=user-item][data-user-id='4242']"))

    type_message(page, EVIL_TEXT)
    [reply] = wait(page, lambda d: messages(d, "bot"))
    wait(page, lambda d: len(by_testid(reply, "inline-button")) == 3)

    [mine] = messages(page, "user")
    assert message_text(mine) == EVIL_TEXT
    assert mine.find_elements(By.CSS_SELECTOR, "b, i, script, strong, em") == []
    assert page.execute_script("return window.__pwned === undefined") is True
    assert message_text(reply) == f"Echo: {EVIL_TEXT}"
    assert reply.find_element(By.TAG_NAME, "strong").text == "Echo"
    assert reply.find_element(By.TAG_NAME, "code").text == EVIL_TEXT
    assert reply.find_elements(By.CSS_SELECTOR, "[data-testid=message-text] b, script") == []

    done, later, docs = by_testid(reply, "inline-button")
    assert (done.text, later.text, docs.text) == ("Done", "Later", "Docs")
    assert docs.tag_name == "a"
    assert docs.get_attribute("href") == "https://example.org/docs"
    assert docs.get_attribute("rel") == "noopener noreferrer"

    later.click()
    alert = wait(page, lambda d: [a for a in by_testid(d, "alert") if a.is_displayed()])[0]
    assert by_testid(alert, "alert-text")[0].text == "Are you sure?"
    by_testid(alert, "alert-ok")[0].click()
    wait(page, lambda d: not alert.is_displayed())

    done.click()
    wait(page, lambda d: reply.get_attribute("data-edited") == "true")
    assert message_text(reply) == "Done \N{WHITE HEAVY CHECK MARK} marked"
    assert reply.find_element(By.TAG_NAME, "em").text == "marked"
    assert by_testid(reply, "inline-keyboard") == []
    assert by_testid(reply, "edited")[0].text == "edited"
    assert len(messages(page, "bot")) == 1 and len(messages(page, "user")) == 1
    toast = wait(page, lambda d: [t for t in by_testid(d, "toast")
                                  if t.text == "Marked as done"])[0]
    assert toast.get_attribute("data-kind") == "info"
    page.save_screenshot(str(SCREENSHOT))


def test_location_and_sticker_reach_the_bot(page: WebDriver, bot: EchoBot) -> None:
    create_user(page, 5151, "Boris", "ru")
    page.find_element(By.CSS_SELECTOR, "[data-testid=attach-toggle]").click()
    for testid, value in (("lat-input", "59.9386"), ("lon-input", "30.3141")):
        field = page.find_element(By.CSS_SELECTOR, f"[data-testid={testid}]")
        field.clear()
        field.send_keys(value)
    page.find_element(By.CSS_SELECTOR, "[data-testid=send-location]").click()
    wait(page, lambda d: [m for m in messages(d, "bot")
                          if message_text(m) == "Location: 59.939, 30.314"])
    [location] = page.find_elements(By.CSS_SELECTOR, "[data-from=user][data-kind=location]")
    assert "59.93860, 30.31410" in location.text

    page.find_element(By.CSS_SELECTOR, "[data-testid=send-sticker]").click()
    wait(page, lambda d: [m for m in messages(d, "bot")
                          if message_text(m) == "Nice sticker \N{THUMBS UP SIGN}"])
    [sticker] = page.find_elements(By.CSS_SELECTOR, "[data-from=user][data-kind=sticker]")
    assert by_testid(sticker, "sticker")[0].text == "\N{THUMBS UP SIGN}"
    assert [m.get_attribute("data-kind") for m in messages(page, "user")] == [
        "location", "sticker"]


def test_existing_chat_is_picked_and_formatting_rendered(
    emu: TelegramEmulator, browser: WebDriver, http: requests.Session
) -> None:
    http.post(f"{emu.url}/control/users", json={"user_id": 777, "first_name": "Vera",
                                                "language_code": "ru"}, timeout=5)
    text = ('<b>bold</b> <i>italic</i> <u>under</u> <s>struck</s> '
            '<tg-spoiler>secret</tg-spoiler> <a href="https://example.org/x">site</a> '
            "&lt;tag&gt; /help\n<blockquote>quoted</blockquote>"
            '<pre><code class="language-python">print(1)</code></pre>')
    sent = http.post(f"{emu.api_url()}/sendMessage", timeout=5, json={
        "chat_id": 777, "text": text, "parse_mode": "HTML"}).json()
    assert sent["ok"] is True, sent
    browser.get(f"{emu.url}/")
    item = wait(browser, lambda d: d.find_elements(
        By.CSS_SELECTOR, "[data-testid=user-item][data-user-id='777']"))[0]
    item.click()
    [message] = wait(browser, lambda d: messages(d, "bot"))
    body = message.find_element(By.CSS_SELECTOR, "[data-testid=message-text]")
    tags = {tag: body.find_element(By.TAG_NAME, tag).text
            for tag in ("strong", "em", "u", "s", "a", "blockquote", "pre")}
    assert tags == {"strong": "bold", "em": "italic", "u": "under", "s": "struck",
                    "a": "site", "blockquote": "quoted", "pre": "print(1)"}
    link = body.find_element(By.TAG_NAME, "a")
    assert link.get_attribute("href") == "https://example.org/x"
    assert link.get_attribute("target") == "_blank"
    assert body.find_element(By.CSS_SELECTOR, "pre").get_attribute("data-language") == "python"
    spoiler = by_testid(body, "spoiler")[0]
    assert "revealed" not in (spoiler.get_attribute("class") or "")
    spoiler.click()
    assert "revealed" in (spoiler.get_attribute("class") or "")
    assert "<tag>" in body.text
    command = by_testid(body, "command")[0]
    assert command.text == "/help"
    command.click()
    wait(browser, lambda d: [m for m in messages(d, "user") if message_text(m) == "/help"])


def test_an_invoice_is_paid_from_the_page(page: WebDriver, bot: EchoBot) -> None:
    create_user(page, 6161, "Stella", "en")
    type_message(page, "/buy")
    invoice = wait(page, lambda d: d.find_elements(
        By.CSS_SELECTOR, "[data-testid=message][data-from=bot][data-kind=invoice]"))[0]
    card = by_testid(invoice, "invoice")[0]
    assert "Stars pack" in card.text and "Fifty stars of fun" in card.text
    pay = by_testid(invoice, "pay-button")[0]
    assert pay.text == "Pay 50 \N{WHITE MEDIUM STAR}"
    pay.click()
    wait(page, lambda d: [m for m in messages(d, "bot") if m.get_attribute("data-kind") ==
                          "text" and message_text(m) == "Thanks for 50 stars"])
    [paid] = page.find_elements(By.CSS_SELECTOR, "[data-kind=successful_payment]")
    assert "50 \N{WHITE MEDIUM STAR}" in paid.text
    assert bot.payments == [("ok", 50, "XTR")]


def test_a_declined_invoice_shows_the_bots_reason(page: WebDriver, bot: EchoBot,
                                                  http: requests.Session,
                                                  emu: TelegramEmulator) -> None:
    create_user(page, 6262, "Dora", "en")
    type_message(page, "/buy decline")
    invoice = wait(page, lambda d: d.find_elements(
        By.CSS_SELECTOR, "[data-testid=message][data-from=bot][data-kind=invoice]"))[0]
    by_testid(invoice, "pay-button")[0].click()
    alert = wait(page, lambda d: [a for a in by_testid(d, "alert") if a.is_displayed()])[0]
    assert by_testid(alert, "alert-text")[0].text == "Sold out, sorry"
    assert page.find_elements(By.CSS_SELECTOR, "[data-kind=successful_payment]") == []
    assert http.get(f"{emu.url}/control/payments", timeout=5).json() == {"payments": []}
    assert bot.payments == []
