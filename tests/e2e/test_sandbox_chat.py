"""The sandbox experience end to end: a person in headless Chromium on the emulator's chat page
talks to the real bot code (a PollingBot polling in a background thread), backed by the test
PostgreSQL and Redis."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import Engine, select

from habitbot.bot.app import PollingBot
from habitbot.config import Settings
from habitbot.models import User
from habitbot.runtime import Runtime, build_runtime
from habitbot.sandbox.telegram_emulator import TelegramEmulator
from tests.support.browser import WAIT_SECONDS, chromium, wait

pytestmark = pytest.mark.e2e

RECORD_TOASTS = """
window.__toasts = [];
new MutationObserver((changes) => {
  for (const change of changes) {
    for (const node of change.addedNodes) {
      if (node.nodeType === 1) {
        window.__toasts.push([node.getAttribute("data-kind"), node.textContent]);
      }
    }
  }
}).observe(document.getElementById("toasts"), { childList: true });
"""
APOLOGIES = ("Sorry, something went wrong", "что-то пошло не так")


# ------------------------------------------------------------------ the real bot


class BackgroundBot:
    """The real PollingBot, polling the emulator from a thread until stopped."""

    def __init__(self, runtime: Runtime) -> None:
        self.bot = PollingBot(runtime, poll_timeout=1)
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self.run, name="habitbot-poller", daemon=True)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.bot.poll_once()
            except Exception as exc:
                if not self.stopping.is_set():
                    self.errors.append(repr(exc))
                self.stopping.wait(0.5)

    def start(self) -> BackgroundBot:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self.bot.executor.shutdown()


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime("bot", "bot", settings=settings, configure_logging=False)
    yield rt
    rt.close()


@pytest.fixture
def live_bot(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> Iterator[BackgroundBot]:
    caplog.set_level(logging.WARNING)
    polling = BackgroundBot(runtime).start()
    try:
        yield polling
    finally:
        polling.stop()
    assert not polling.thread.is_alive()
    assert polling.errors == []
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    failures = [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR]
    assert failures == []


# ------------------------------------------------------------------ the browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.fixture
def page(browser: WebDriver, emulator: TelegramEmulator,
         live_bot: BackgroundBot) -> Iterator[WebDriver]:
    browser.get(f"{emulator.url}/")
    browser.execute_script(RECORD_TOASTS)
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid=bot-status]")
         .get_attribute("data-state") == "online")
    yield browser
    problems = [text for kind, text in toasts(browser) if kind in ("error", "warning")]
    assert problems == [], "the page showed errors"


def by_testid(root: WebDriver | WebElement, testid: str) -> list[WebElement]:
    return root.find_elements(By.CSS_SELECTOR, f"[data-testid={testid}]")


def messages(driver: WebDriver, sender: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, f"[data-testid=message][data-from={sender}]")


def message_text(message: WebElement) -> str:
    return "\n".join(part.text for part in by_testid(message, "message-text"))


def buttons(message: WebElement) -> list[str]:
    return [button.text for button in by_testid(message, "inline-button")]


def toasts(driver: WebDriver) -> list[tuple[str, str]]:
    return [tuple(item) for item in driver.execute_script("return window.__toasts || []")]


def bot_message(driver: WebDriver, matches: Callable[[str], bool]) -> WebElement:
    """The newest bot message whose text satisfies ``matches``, once it is on the page."""
    def find(d: WebDriver) -> WebElement | None:
        return next((m for m in reversed(messages(d, "bot")) if matches(message_text(m))),
                    None)
    return wait(driver, find)


def last_bot_message(driver: WebDriver) -> WebElement:
    return messages(driver, "bot")[-1]


def message_id(message: WebElement) -> int:
    return int(message.get_attribute("data-message-id") or 0)


def edited_to(driver: WebDriver, message: WebElement, matches: Callable[[str], bool]) -> str:
    """Wait until ``message`` (the same bubble, not a new one) is edited to matching text."""
    def done(d: WebDriver) -> str | None:
        if message.get_attribute("data-edited") != "true":
            return None
        text = message_text(message)
        return text if matches(text) else None
    return wait(driver, done)


def press(driver: WebDriver, message: WebElement, label: str) -> None:
    """Click the inline button labelled ``label`` under ``message``."""
    def click(d: WebDriver) -> bool:
        for button in by_testid(message, "inline-button"):
            if button.text == label:
                button.click()
                return True
        return False
    WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.05, ignored_exceptions=(
        StaleElementReferenceException, ElementClickInterceptedException)).until(click)


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
    wait(driver, lambda d: by_testid(d, "start-box")[0].is_displayed())


def type_message(driver: WebDriver, text: str) -> WebElement:
    """Type and send ``text``; return the user's bubble once it is on the page."""
    before = len(messages(driver, "user"))
    box = driver.find_element(By.CSS_SELECTOR, "[data-testid=message-input]")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    mine = wait(driver, lambda d: messages(d, "user")[before:])[0]
    assert message_text(mine) == text
    return mine


def reply_keyboard(driver: WebDriver) -> list[str]:
    panel = by_testid(driver, "reply-keyboard")[0]
    if not panel.is_displayed():
        return []
    return [button.text for button in by_testid(panel, "reply-button")]


def assert_no_trouble_shown(driver: WebDriver) -> None:
    banner = by_testid(driver, "banner")[0]
    assert not banner.is_displayed(), banner.text
    assert not by_testid(driver, "alert")[0].is_displayed()
    texts = [message_text(m) for m in messages(driver, "bot")]
    assert not [t for t in texts if any(a.lower() in t.lower() for a in APOLOGIES)], texts


def local_clock(zone: str, text: str) -> tuple[str, str]:
    """The UTC offset and local time a message shows, checked against the zone's real ones."""
    match = re.search(r"\((UTC[+−]\d+(?::\d\d)?)\)\D+(\d\d:\d\d)", text)
    assert match, text
    offset, shown = match.groups()
    now = datetime.now(UTC).astimezone(ZoneInfo(zone))
    minutes = int((now.utcoffset() or timedelta()).total_seconds()) // 60
    hours, rest = divmod(abs(minutes), 60)
    expected = f"UTC{'+' if minutes >= 0 else '−'}{hours}" + (f":{rest:02d}" if rest else "")
    assert offset == expected, text
    recent = {(now - timedelta(minutes=m)).strftime("%H:%M") for m in (0, 1)}
    assert shown in recent, (text, recent)
    return offset, shown


def stored_user(engine: Engine, telegram_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(User).where(User.telegram_id == telegram_id)).one()


# ------------------------------------------------------------------ scenarios


def test_russian_newcomer_onboards_by_typing_a_city(page: WebDriver, engine: Engine) -> None:
    create_user(page, 7101, "Аня", "ru")
    assert "ru" in by_testid(page, "chat-sub")[0].text

    type_message(page, "/start")
    greeting = bot_message(page, lambda t: "Привет, Аня!" in t)
    assert "Для начала выберите язык:" in message_text(greeting)
    assert buttons(greeting) == ["🇷🇺 Русский", "🇬🇧 English"]

    press(page, greeting, "🇷🇺 Русский")
    assert edited_to(page, greeting, lambda t: t == "Язык: 🇷🇺 Русский")
    assert by_testid(greeting, "inline-keyboard") == []
    ask = bot_message(page, lambda t: t.startswith("Где вы находитесь?"))
    assert message_id(ask) > message_id(greeting)
    assert wait(page, reply_keyboard) == ["📍 Отправить геопозицию"]

    type_message(page, "Новосибирск")
    confirm = bot_message(page, lambda t: "Asia/Novosibirsk" in t)
    assert re.fullmatch(r"Часовой пояс: Asia/Novosibirsk \(UTC\+7\)\. "
                        r"У вас сейчас \d\d:\d\d\. Верно\?", message_text(confirm))
    local_clock("Asia/Novosibirsk", message_text(confirm))
    assert buttons(confirm) == ["✅ Да", "✏️ Изменить"]

    press(page, confirm, "✅ Да")
    assert edited_to(page, confirm,
                     lambda t: t == "Часовой пояс сохранён: Asia/Novosibirsk.")
    done = bot_message(page, lambda t: t.startswith("Готово!"))
    assert done == last_bot_message(page)
    wait(page, lambda d: reply_keyboard(d) == [])
    assert len(messages(page, "bot")) == 4
    assert_no_trouble_shown(page)

    user = stored_user(engine, 7101)
    assert (user.language, user.timezone) == ("ru", "Asia/Novosibirsk")
    assert user.first_name == "Аня"
    assert user.onboarded_at is not None


def test_english_user_shares_london_then_changes_settings_in_place(
    page: WebDriver, engine: Engine
) -> None:
    create_user(page, 7102, "Bob", "en")
    by_testid(page, "start-button")[0].click()
    wait(page, lambda d: [m for m in messages(d, "user") if message_text(m) == "/start"])
    greeting = bot_message(page, lambda t: "Hi, Bob!" in t)
    assert "First, choose your language:" in message_text(greeting)

    press(page, greeting, "🇬🇧 English")
    assert edited_to(page, greeting, lambda t: t == "Language: 🇬🇧 English")
    bot_message(page, lambda t: t.startswith("Where are you?"))
    assert wait(page, reply_keyboard) == ["📍 Send my location"]

    by_testid(page, "attach-toggle")[0].click()
    for testid, value in (("lat-input", "51.5072"), ("lon-input", "-0.1276")):
        field = by_testid(page, testid)[0]
        field.clear()
        field.send_keys(value)
    by_testid(page, "reply-button")[0].click()
    [location] = wait(page, lambda d: d.find_elements(
        By.CSS_SELECTOR, "[data-testid=message][data-from=user][data-kind=location]"))
    assert "51.50720, -0.12760" in location.text
    wait(page, lambda d: reply_keyboard(d) == [])  # a one-time keyboard

    confirm = bot_message(page, lambda t: "Europe/London" in t)
    assert re.fullmatch(r"Timezone: Europe/London \(UTC\+[01]\)\. "
                        r"Your local time is \d\d:\d\d\. Is that right\?",
                        message_text(confirm)), message_text(confirm)
    local_clock("Europe/London", message_text(confirm))
    press(page, confirm, "✅ Yes")
    assert edited_to(page, confirm, lambda t: t == "Timezone saved: Europe/London.")
    bot_message(page, lambda t: t.startswith("All set!"))

    type_message(page, "/settings")
    menu = bot_message(page, lambda t: t.startswith("Settings"))
    assert menu.find_element(By.TAG_NAME, "strong").text == "Settings"
    text = message_text(menu)
    assert "Language: 🇬🇧 English" in text and "Timezone: Europe/London" in text
    assert "Reminders: on" in text
    local_clock("Europe/London", text)
    assert buttons(menu) == ["🌐 Language", "🕒 Timezone", "🔕 Turn reminders off",
                             "🌅 Day start", "🏖 Rest", "📊 Weekly summary"]
    bot_count = len(messages(page, "bot"))

    press(page, menu, "🔕 Turn reminders off")
    assert "Reminders: off" in edited_to(page, menu, lambda t: "Reminders: off" in t)
    wait(page, lambda d: "🔔 Turn reminders on" in buttons(menu))
    wait(page, lambda d: ("info", "Reminders off") in toasts(d))

    press(page, menu, "🌐 Language")
    wait(page, lambda d: message_text(menu) == "Choose your language:")
    assert buttons(menu) == ["🇷🇺 Русский", "🇬🇧 English", "« Back"]
    press(page, menu, "🇷🇺 Русский")
    russian = wait(page, lambda d: message_text(menu).startswith("Настройки")
                   and message_text(menu))
    assert menu.find_element(By.TAG_NAME, "strong").text == "Настройки"
    assert "Язык: 🇷🇺 Русский" in russian and "Часовой пояс: Europe/London" in russian
    assert "Напоминания: выключены" in russian
    assert buttons(menu) == ["🌐 Язык", "🕒 Часовой пояс", "🔔 Включить напоминания",
                             "🌅 Начало дня", "🏖 Отдых", "📊 Итоги недели"]
    assert len(messages(page, "bot")) == bot_count, "the menu was edited, not sent again"
    assert_no_trouble_shown(page)

    user = stored_user(engine, 7102)
    assert (user.language, user.timezone) == ("ru", "Europe/London")
    assert user.notifications_enabled is False
    assert user.onboarded_at is not None


def test_cancel_midway_through_onboarding_then_start_again(
    page: WebDriver, engine: Engine, redis_conn: redis.Redis
) -> None:
    create_user(page, 7103, "Cy", "en")
    type_message(page, "/start")
    greeting = bot_message(page, lambda t: "Hi, Cy!" in t)
    press(page, greeting, "🇷🇺 Русский")
    assert edited_to(page, greeting, lambda t: t == "Язык: 🇷🇺 Русский")
    bot_message(page, lambda t: t.startswith("Где вы находитесь?"))
    assert wait(page, reply_keyboard) == ["📍 Отправить геопозицию"]
    assert redis_conn.exists("habitbot:fsm:7103")

    sent = type_message(page, "/cancel")
    cancelled = bot_message(page, lambda t: t.startswith("Отменено."))
    assert message_text(cancelled) == "Отменено. Отправьте /help, чтобы узнать, что я умею."
    assert message_id(cancelled) > message_id(sent)
    assert cancelled == last_bot_message(page)
    wait(page, lambda d: reply_keyboard(d) == [])
    assert not redis_conn.exists("habitbot:fsm:7103")
    assert_no_trouble_shown(page)
    user = stored_user(engine, 7103)
    assert user.language == "ru" and user.onboarded_at is None

    type_message(page, "/start")
    again = wait(page, lambda d: [m for m in messages(d, "bot")
                                  if message_id(m) > message_id(cancelled)
                                  and "Привет, Cy!" in message_text(m)])[0]
    assert "Для начала выберите язык:" in message_text(again)
    assert buttons(again) == ["🇷🇺 Русский", "🇬🇧 English"]
    press(page, again, "🇬🇧 English")
    assert edited_to(page, again, lambda t: t == "Language: 🇬🇧 English")
    bot_message(page, lambda t: t.startswith("Where are you?"))
    assert wait(page, reply_keyboard) == ["📍 Send my location"]
    assert message_text(greeting) == "Язык: 🇷🇺 Русский"
    assert_no_trouble_shown(page)
    assert stored_user(engine, 7103).language == "en"
