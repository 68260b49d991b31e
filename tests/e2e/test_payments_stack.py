"""Premium end to end on the real program group (supervisord: bot, gunicorn web, RQ workers,
scheduler) with the Telegram, YooKassa and Crypto Pay emulators, as in `make run`'s sandbox: a
new user starts the trial, tops up with YooKassa on the provider's pay page, buys a month from
the balance, a month with CryptoBot and one with Stars, and gets the Stars month refunded by
the operator — every step checked in /balance, the transactions and the premium end date."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
import requests
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from sqlalchemy import select

from habitbot.db import make_engine
from habitbot.models import BalanceTransaction, Payment, User
from habitbot.sandbox.cryptopay_emulator import CryptoPayEmulator
from habitbot.sandbox.payments_client import CryptoPayControl, YooKassaControl
from habitbot.sandbox.yookassa_emulator import YooKassaEmulator
from habitbot.services.schema import run_deploy_gate
from tests.conftest import redis_db
from tests.e2e.burst import Burst
from tests.e2e.stack import Stack, wait_until
from tests.payments.support import payment_env
from tests.support.browser import chromium, wait

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
USER = 5077
MONTH = timedelta(days=30)
ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"
BURST_USERS = 40


@pytest.fixture
def kassa() -> Iterator[YooKassaEmulator]:
    emu = YooKassaEmulator(shop_id="100500", secret_key="test_e2e-secret",
                           retry_delays=(0.5, 1.0, 2.0)).start()
    yield emu
    emu.stop()


@pytest.fixture
def cryptopay() -> Iterator[CryptoPayEmulator]:
    emu = CryptoPayEmulator(tokens=("4242:AAe2eCryptoPayToken",),
                            retry_delays=(0.5, 1.0, 2.0)).start()
    yield emu
    emu.stop()


@pytest.fixture
def stack(tmp_path, scratch_database, redis_url, emulator, kassa, cryptopay):
    engine = make_engine(scratch_database, "cli")
    run_deploy_gate(engine)
    engine.dispose()
    e2e_redis = redis_db(redis_url, 1)
    conn = redis.Redis.from_url(e2e_redis)
    conn.flushdb()
    env = payment_env(scratch_database, e2e_redis, emulator.url, kassa, cryptopay,
                      YOOKASSA_SHOP_ID="100500", YOOKASSA_SECRET_KEY="test_e2e-secret",
                      CRYPTOBOT_TOKEN="4242:AAe2eCryptoPayToken", ADMIN_TOKEN=ADMIN_TOKEN)
    running = Stack(tmp_path, env)
    with YooKassaControl(kassa.url) as control:
        control.set_webhook(f"{running.base_url}/webhooks/yookassa")
    with CryptoPayControl(cryptopay.url) as control:
        control.set_webhook(f"{running.base_url}/webhooks/cryptobot")
    running.start()
    running.wait_ready()
    yield running
    running.stop()
    conn.flushdb()
    conn.close()


class Person:
    """A Telegram user of the emulator talking to the bot process of the stack."""

    def __init__(self, emu_client, user_id: int):
        self.emu = emu_client
        self.user_id = user_id

    def say(self, text: str) -> dict:
        sent = self.emu.inject_message(self.user_id, text)
        return self.emu.wait_for_message(self.user_id, after_message_id=sent["message_id"],
                                         timeout=30)

    def press(self, button_text: str) -> dict:
        """Press a button of the last bot message that has it; the bot's answer (it answers
        after the handler ran, so edits are in place by then)."""
        message = next(m for m in reversed(self.emu.messages(self.user_id, sender="bot"))
                       if button_text in self.buttons(m))
        pressed = self.emu.press(self.user_id, message_id=message["message_id"],
                                 button_text=button_text)
        return self.emu.wait_for_callback_answer(self.user_id, pressed["callback_query_id"],
                                                 timeout=30)

    def wait_for(self, needle: str, after: int = 0) -> dict:
        return self.emu.wait_for_message(self.user_id, lambda m: needle in (m.get("text") or ""),
                                         timeout=60, after_message_id=after)

    def last_id(self) -> int:
        return self.emu.messages(self.user_id)[-1]["message_id"]

    @staticmethod
    def buttons(message: dict) -> dict[str, dict]:
        rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
        return {b["text"]: b for row in rows for b in row}


def _pay_on_the_page(url: str) -> None:
    """What the payer does on the provider's page: press Pay."""
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and "Pay" in page.text
    assert requests.post(url, data={"action": "pay"}, timeout=10).status_code in (200, 303)


def _state(engine, telegram_id: int) -> tuple[int, datetime | None, list[tuple[str, int, int]]]:
    with engine.connect() as conn:
        user = conn.execute(select(User.id, User.premium_ends_at)
                            .where(User.telegram_id == telegram_id)).one()
        rows = conn.execute(select(BalanceTransaction.kind, BalanceTransaction.amount_minor,
                                   BalanceTransaction.balance_after_minor)
                            .where(BalanceTransaction.user_id == user.id)
                            .order_by(BalanceTransaction.id)).all()
    balance = rows[-1][2] if rows else 0
    return balance, user.premium_ends_at, [tuple(r) for r in rows]


def _premium_date(text: str) -> str:
    found = re.search(r"Premium until (\d\d\.\d\d\.\d{4})", text)
    assert found, text
    return found.group(1)


def _shown(when: datetime) -> str:
    return when.astimezone(ZoneInfo("Europe/London")).strftime("%d.%m.%Y")  # Vera's zone


def test_trial_top_up_three_ways_to_buy_and_a_refund(stack, emulator, emu_client, kassa,
                                                     cryptopay, scratch_database):
    engine = make_engine(scratch_database, "cli")
    emu_client.add_user(USER, first_name="Vera", language_code="en")
    vera = Person(emu_client, USER)
    vera.say("/start")
    vera.press("🇬🇧 English")
    sent = emu_client.inject_message(USER, None, location={"latitude": 51.5072,
                                                           "longitude": -0.1276})
    emu_client.wait_for_message(USER, after_message_id=sent["message_id"], timeout=30)
    vera.press("✅ Yes")

    # 1. The trial, once.
    vera.say("/premium")
    assert vera.press("🎁 Start the 7-day trial")["text"].startswith("Premium trial until")
    assert _state(engine, USER)[:2] == (0, None)

    # 2. Top up 300 ₽ with YooKassa, paid on the provider's page; the webhook credits it.
    vera.say("/premium")
    vera.press("💳 Top up the balance")
    vera.press("300.00 ₽")
    before = vera.last_id()
    vera.press("💳 Bank card (YooKassa)")
    screen = next(m for m in reversed(emu_client.messages(USER, sender="bot"))
                  if "💳 Pay 300.00 ₽" in Person.buttons(m))
    _pay_on_the_page(Person.buttons(screen)["💳 Pay 300.00 ₽"]["url"])
    vera.wait_for("300.00 ₽", after=before)  # told after the credit, by a worker
    assert _state(engine, USER)[0] == 30000
    assert "300.00 ₽" in vera.say("/balance")["text"]

    # 3. A month from the balance: 199 ₽ debited, premium for 30 days from now.
    vera.say("/premium")
    vera.press("⭐ Buy 1 month")
    started = datetime.now(UTC)
    assert vera.press("From the balance (199.00 ₽)")["text"].startswith("Premium until")
    balance, until, rows = _state(engine, USER)
    assert balance == 10100 and rows == [("topup", 30000, 30000), ("purchase", -19900, 10100)]
    assert until is not None and started + MONTH - timedelta(minutes=1) < until
    first_until = until

    # 4. Another month with CryptoBot: paid on the invoice page, signed webhook, +30 days.
    vera.say("/premium")
    vera.press("⭐ Buy 1 month")
    vera.press("🪙 CryptoBot")
    screen = next(m for m in reversed(emu_client.messages(USER, sender="bot"))
                  if any(t.startswith("💳 Pay") for t in Person.buttons(m)))
    pay_text = next(t for t in Person.buttons(screen) if t.startswith("💳 Pay"))
    before = vera.last_id()
    _pay_on_the_page(Person.buttons(screen)[pay_text]["url"])
    vera.wait_for("received: premium until", after=before)
    balance, until, _ = _state(engine, USER)
    assert balance == 10100 and until == first_until + MONTH

    # 5. A month with Telegram Stars: invoice, pre-checkout answered by the bot, +30 days.
    vera.say("/premium")
    vera.press("⭐ Buy 1 month")
    before = vera.last_id()
    vera.press("⭐ Telegram Stars (150 ⭐)")
    invoice = emu_client.wait_for_message(USER, lambda m: "invoice" in m, timeout=30,
                                          after_message_id=before)
    paid = emu_client.checkout(USER, invoice_message_id=invoice["message_id"])
    assert paid["outcome"] == "paid", paid
    vera.wait_for("received: premium until", after=invoice["message_id"])
    _, until, _ = _state(engine, USER)
    assert until == first_until + 2 * MONTH
    shown = vera.say("/premium")["text"]
    assert _premium_date(shown) == _shown(first_until + 2 * MONTH)

    # 6. The operator refunds the Stars month: Telegram refunds, premium loses those 30 days.
    with engine.connect() as conn:
        stars_payment = conn.execute(select(Payment.id).where(
            Payment.provider == "stars", Payment.status == "succeeded")).scalar_one()
    refund = stack.habitbot("payments", "refund", "--provider", "stars", "--payment",
                            str(stars_payment), "--reason", "asked by the user")
    assert refund.returncode == 0, refund.stdout + refund.stderr
    balance, until, rows = _state(engine, USER)
    assert until == first_until + MONTH and balance == 10100
    assert [r[0] for r in rows] == ["topup", "purchase"]  # a Stars month never touched it
    assert emu_client.payments()[-1].get("refunded") is True
    # Nothing was credited twice along the way.
    with engine.connect() as conn:
        statuses = conn.execute(select(Payment.provider, Payment.status)
                                .order_by(Payment.id)).all()
    assert [tuple(s) for s in statuses] == [("yookassa", "succeeded"), ("balance", "succeeded"),
                                          ("cryptobot", "succeeded"), ("stars", "refunded")]
    engine.dispose()


# ---------------------------------------------------------------- the dashboard, live

def _cells(driver, table_id: str) -> list[list[str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")
    return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows]


def _bulk_sent(driver) -> int:
    """Reminders sent, from the overview's send-rate table (the bulk lane)."""
    try:
        rows = _cells(driver, "sender-totals")
    except StaleElementReferenceException:  # the page reloaded itself under us
        return -1
    return next((int(r[1]) for r in rows if r and r[0] == "bulk"), 0)


def _succeeded(driver, provider: str) -> int:
    try:
        rows = _cells(driver, "payment-groups")
    except StaleElementReferenceException:
        return -1
    return sum(int(r[3]) for r in rows if len(r) > 3 and r[:2] == [provider, "succeeded"])


def _seen_after(driver, what, at_least: int, since: float, timeout: float = 90) -> float:
    """Seconds from `since` until the page — reloading only by itself — shows `at_least`."""
    wait_until(lambda: what(driver) >= at_least, timeout, f"the page shows {at_least}")
    return time.monotonic() - since


def test_the_dashboard_shows_a_reminder_burst_and_a_payment_live(stack, emu_client, kassa,
                                                                 scratch_database, tmp_path):
    """An operator keeps /admin open: a burst of reminders and a YooKassa payment show up
    on the overview and the payments page by the pages' own refresh, without a click."""
    engine = make_engine(scratch_database, "cli")
    with chromium(tmp_path / "profile") as driver:
        driver.get(f"{stack.base_url}/admin/")
        driver.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait(driver, lambda d: d.find_element(By.TAG_NAME, "h1").text.startswith("Overview"))
        assert _bulk_sent(driver) == 0

        burst = Burst.plan(engine, users=BURST_USERS, first_chat=640_000, lead=10)
        burst.wait_sent(BURST_USERS, burst.seconds_to_fire() + 60, "the burst sent")
        sent_at = time.monotonic()
        shown_in = _seen_after(driver, _bulk_sent, BURST_USERS, sent_at)
        print(f"\nreminder burst of {BURST_USERS}: on the overview {shown_in:.1f} s after the "
              "last was sent (the page reloads itself every 10 s)")

        # A top-up paid at YooKassa, credited by the webhook.
        driver.get(f"{stack.base_url}/admin/payments")
        wait(driver, lambda d: d.find_element(By.TAG_NAME, "h1").text.startswith("Payments"))
        assert _succeeded(driver, "yookassa") == 0
        emu_client.add_user(USER, first_name="Vera", language_code="en")
        vera = Person(emu_client, USER)
        vera.say("/start")
        vera.press("🇬🇧 English")
        vera.say("/premium")
        vera.press("💳 Top up the balance")
        vera.press("300.00 ₽")
        vera.press("💳 Bank card (YooKassa)")
        screen = next(m for m in reversed(emu_client.messages(USER, sender="bot"))
                      if "💳 Pay 300.00 ₽" in Person.buttons(m))
        _pay_on_the_page(Person.buttons(screen)["💳 Pay 300.00 ₽"]["url"])
        wait_until(lambda: _state(engine, USER)[0] == 30000, 30, "the top-up credited")
        paid_at = time.monotonic()
        shown_in = _seen_after(driver, lambda d: _succeeded(d, "yookassa"), 1, paid_at)
        print(f"payment: on the payments page {shown_in:.1f} s after the credit (the page "
              "reloads itself every 10 s)")
    engine.dispose()
