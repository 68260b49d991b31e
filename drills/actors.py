"""The people in a drill: users who write to the bot, and users whose reminders are due.

Users are set up through the services (the "given" of a drill); what happens to them during
the incident goes through the real programs and the Telegram emulator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from drills.harness import DrillStack
from habitbot.services.habits import HabitDraft, create_habit
from habitbot.services.users import set_timezone, touch_user
from tests.e2e.stack import wait_until

REPLY_TIMEOUT = 45.0


@dataclass
class Person:
    """A Telegram user who writes to the bot; remembers each message and whether the bot
    answered it."""

    stack: DrillStack
    telegram_id: int
    first_name: str = "Eve"
    language: str = "en"
    sent: list[tuple[int, str | None]] = field(default_factory=list)  # (message id, expect)

    def __post_init__(self) -> None:
        self.stack.lab.tg.add_user(self.telegram_id, first_name=self.first_name,
                                   language_code=self.language)

    def onboard(self, timezone: str = "UTC") -> int:
        """The user as after /start: stored, language and timezone chosen. Returns the id."""
        user = touch_user(self.stack.engine, self.telegram_id, None, self.first_name,
                          self.language)
        set_timezone(self.stack.engine, self.telegram_id, timezone, complete_onboarding=True)
        assert user.id is not None
        return user.id

    def say(self, text: str, expect: str | None = None) -> int:
        """Write without waiting; returns the message id. The message counts as answered once
        the bot writes after it — a message containing `expect`, when given."""
        message_id = int(self.stack.lab.tg.inject_message(self.telegram_id, text)["message_id"])
        self.sent.append((message_id, expect))
        return message_id

    def reply_to(self, message_id: int, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        return self.stack.lab.tg.wait_for_message(self.telegram_id,
                                                  after_message_id=message_id,
                                                  timeout=timeout)

    def ask(self, text: str, timeout: float = REPLY_TIMEOUT, expect: str | None = None) -> str:
        """Write and return the bot's next message (the first one containing `expect`, when
        given: answers to earlier messages may still be on their way)."""
        if expect is None:
            return str(self.reply_to(self.say(text), timeout).get("text") or "")
        message = self.stack.lab.tg.wait_for_message(
            self.telegram_id, lambda m: expect in str(m.get("text") or ""), timeout=timeout,
            after_message_id=self.say(text, expect))
        return str(message.get("text") or "")

    def messages(self) -> list[dict[str, Any]]:
        return self.stack.lab.tg.messages(self.telegram_id)

    def unanswered(self) -> int:
        """Messages of this user the bot never answered."""
        replies = [m for m in self.messages() if m["from"] == "bot"]
        return sum(1 for sent, expect in self.sent
                   if not any(m["message_id"] > sent
                              and (expect is None or expect in str(m.get("text") or ""))
                              for m in replies))

    def wait_latest_answered(self, timeout: float) -> None:
        """Until the bot has written after the user's last message."""
        last = max(sent for sent, _ in self.sent)
        wait_until(lambda: any(m["from"] == "bot" and m["message_id"] > last
                               for m in self.messages()), timeout,
                   f"an answer to the last message of user {self.telegram_id}")

    def wait_answered(self, timeout: float) -> None:
        wait_until(lambda: self.unanswered() == 0, timeout,
                   f"the bot answering every message of user {self.telegram_id}")


@dataclass
class Reminded:
    """Users each with one daily habit whose reminder is due at `fire_at` (UTC)."""

    stack: DrillStack
    chats: list[int]
    fire_at: datetime
    habit: str = "Stretch"

    @classmethod
    def plan(cls, stack: DrillStack, first_chat: int, users: int = 3, lead: float = 20.0,
             habit: str = "Stretch") -> Reminded:
        """Due on the first minute boundary at least `lead` seconds away."""
        fire_at = (datetime.now(UTC) + timedelta(seconds=lead)).replace(
            second=0, microsecond=0) + timedelta(minutes=1)
        chats = list(range(first_chat, first_chat + users))
        for chat in chats:
            stack.lab.tg.add_user(chat, first_name=f"User {chat}", language_code="en")
            user = touch_user(stack.engine, chat, None, f"User {chat}", "en")
            set_timezone(stack.engine, chat, "UTC", complete_onboarding=True)
            assert user.id is not None
            create_habit(stack.engine, user.id, HabitDraft(habit,
                                                           reminder_times=[fire_at.time()]))
        return cls(stack, chats, fire_at, habit)

    @property
    def text(self) -> str:
        return f"⏰ {self.fire_at:%H:%M} · {self.habit}"

    def seconds_to_fire(self) -> float:
        return max(0.0, (self.fire_at - datetime.now(UTC)).total_seconds())

    def received(self) -> dict[int, int]:
        """Chat → reminder messages for this fire time."""
        tg = self.stack.lab.tg
        return {chat: sum(1 for m in tg.messages(chat, sender="bot")
                          if (m.get("text") or "") == self.text)
                for chat in self.chats}

    def missing(self) -> int:
        return sum(1 for count in self.received().values() if count == 0)

    def duplicated(self) -> int:
        return sum(count - 1 for count in self.received().values() if count > 1)

    def wait_delivered(self, timeout: float) -> None:
        wait_until(lambda: self.missing() == 0, timeout,
                   f"{len(self.chats)} reminders for {self.fire_at:%H:%M} delivered")

    def statuses(self) -> dict[str, int]:
        rows = self.stack.query(
            "SELECT d.status, count(*) AS n FROM reminder_deliveries d "
            "JOIN users u ON u.id = d.user_id WHERE u.telegram_id = ANY(:chats) "
            "AND d.fire_at = :fire_at GROUP BY d.status", chats=self.chats,
            fire_at=self.fire_at)
        return {row.status: row.n for row in rows}


YOOKASSA = "💳 Bank card (YooKassa)"
CRYPTOBOT = "🪙 CryptoBot"


@dataclass(frozen=True)
class Started:
    """A payment the user started in /premium: our id, the provider's id, the pay link."""

    payment_id: int
    provider: str
    provider_id: str
    url: str
    message_id: int


class Payer(Person):
    """A user who tops up the balance through the bot, as in the chat."""

    def press(self, message_id: int, label: str, timeout: float = REPLY_TIMEOUT) -> dict:
        """Press the button labelled `label` on a bot message; returns the callback answer."""
        tg = self.stack.lab.tg
        pressed = tg.press(self.telegram_id, message_id=message_id, button_text=label)
        return tg.wait_for_callback_answer(self.telegram_id, pressed["callback_query_id"],
                                           timeout=timeout)

    def screen(self, message_id: int) -> dict[str, Any]:
        return next(m for m in self.messages() if m["message_id"] == message_id)

    def top_up(self, provider: str = YOOKASSA, amount: str = "100.00 ₽") -> dict[str, Any]:
        """/premium → top up → amount → provider; returns the screen the bot left."""
        asked = self.say("/premium")
        screen = self.stack.lab.tg.wait_for_message(
            self.telegram_id, lambda m: "💳 Top up the balance" in json.dumps(
                m.get("reply_markup") or {}, ensure_ascii=False),
            timeout=REPLY_TIMEOUT, after_message_id=asked)["message_id"]
        self.press(screen, "💳 Top up the balance")
        self.press(screen, amount)
        self.press(screen, provider)
        return self.screen(screen)

    def started(self, screen: dict[str, Any]) -> Started:
        """The payment on a "Payment #N … Pay" screen."""
        text = str(screen.get("text") or "")
        if "Payment #" not in text:
            raise AssertionError(f"no payment screen: {text!r}")
        payment_id = int(text.split("Payment #", 1)[1].split(":", 1)[0])
        url = next(b["url"] for row in screen["reply_markup"]["inline_keyboard"] for b in row
                   if b.get("url"))
        token = url.rstrip("/").rsplit("/", 1)[1]
        lab = self.stack.lab
        if url.startswith(lab.kassa.url):
            return Started(payment_id, "yookassa", token, url, screen["message_id"])
        invoice = next(i for i in lab.crypto_ctl.invoices() if i.get("hash") == token)
        return Started(payment_id, "cryptobot", str(invoice["invoice_id"]), url,
                       screen["message_id"])

    def pay(self, started: Started) -> None:
        """The user pays on the provider's page."""
        lab = self.stack.lab
        if started.provider == "yookassa":
            lab.kassa_ctl.pay(started.provider_id)
        else:
            lab.crypto_ctl.pay(int(started.provider_id))

    def balance(self) -> int:
        """The balance in minor units, from the database."""
        value = self.stack.scalar(
            "SELECT coalesce(sum(b.amount_minor), 0) FROM balances b JOIN users u "
            "ON u.id = b.user_id WHERE u.telegram_id = :t", t=self.telegram_id)
        return int(value)

    def credits(self, started: Started) -> int:
        """Balance transactions crediting this payment (exactly one when credited). Found by
        the provider's id: after a database restore our id of a re-created payment differs."""
        return int(self.stack.scalar(
            "SELECT count(*) FROM balance_transactions t JOIN payments p ON p.id = t.payment_id "
            "WHERE p.provider = :provider AND p.provider_payment_id = :pid AND t.kind = 'topup'",
            provider=started.provider, pid=started.provider_id))

    def notices(self) -> int:
        """Messages telling the user a top-up was received."""
        return sum(1 for m in self.messages() if m["from"] == "bot"
                   and str(m.get("text") or "").startswith("✅ Payment received:"))
