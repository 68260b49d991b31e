"""A user talking to the real bot code through the emulator: say something, press a button,
read what the bot shows."""

from __future__ import annotations

from typing import Any

import pytest

from habitbot.bot.app import PollingBot
from habitbot.runtime import build_runtime
from habitbot.services.users import set_timezone, touch_user


class Chat:
    def __init__(self, emu_client, bot: PollingBot, user_id: int):
        self.emu = emu_client
        self.bot = bot
        self.user_id = user_id

    def _run(self) -> None:
        self.bot.poll_once()
        assert self.bot.executor.drain(timeout=30)

    def say(self, text: str | None = None, **fields: Any) -> dict:
        """Send a message; return the bot's first answer to it."""
        sent = self.emu.inject_message(self.user_id, text, **fields)
        self._run()
        return self.emu.wait_for_message(self.user_id, after_message_id=sent["message_id"])

    def answers_to(self, text: str | None = None, **fields: Any) -> list[dict]:
        """Send a message; return every bot message sent after it."""
        sent = self.emu.inject_message(self.user_id, text, **fields)
        self._run()
        self.emu.wait_for_message(self.user_id, after_message_id=sent["message_id"])
        return [m for m in self.emu.messages(self.user_id, sender="bot")
                if m["message_id"] > sent["message_id"]]

    def press(self, button_text: str | None = None, message_id: int | None = None,
              data: str | None = None) -> dict:
        """Press a button (of the last bot message that has it); return the callback answer."""
        if message_id is None and data is None:
            message_id = self.message_with_button(button_text)["message_id"]
        pressed = self.emu.press(self.user_id, message_id=message_id, data=data,
                                 button_text=button_text)
        self._run()
        return self.emu.wait_for_callback_answer(self.user_id, pressed["callback_query_id"])

    def message_with_button(self, button_text: str | None) -> dict:
        for message in reversed(self.emu.messages(self.user_id, sender="bot")):
            rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
            if any(b["text"] == button_text for row in rows for b in row):
                return message
        raise AssertionError(f"no message with a button {button_text!r}")

    def message(self, message_id: int) -> dict:
        return next(m for m in self.emu.messages(self.user_id) if m["message_id"] == message_id)

    def last(self) -> dict:
        return self.emu.messages(self.user_id, sender="bot")[-1]

    def buttons(self, message: dict) -> list[str]:
        rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
        return [b["text"] for row in rows for b in row]


@pytest.fixture
def runtime(settings):
    rt = build_runtime("bot", "bot", settings=settings, configure_logging=False)
    yield rt
    rt.close()


@pytest.fixture
def bot(runtime, emu_client):
    polling = PollingBot(runtime, poll_timeout=1)
    yield polling
    polling.executor.shutdown()


@pytest.fixture
def chat_with(emu_client, bot):
    def make(user_id: int, first_name: str = "Test", language_code: str = "en") -> Chat:
        emu_client.add_user(user_id, first_name=first_name, language_code=language_code)
        return Chat(emu_client, bot, user_id)
    return make


def onboard(emu_client, engine, people: dict[int, str], language: str = "en") -> None:
    """Users known to Telegram and past onboarding (in UTC): {telegram id: first name}."""
    for user, name in people.items():
        emu_client.add_user(user, first_name=name, language_code=language)
        touch_user(engine, user, None, name, language)
        set_timezone(engine, user, "UTC", complete_onboarding=True)
