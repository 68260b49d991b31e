"""Reading commands out of messages."""

from __future__ import annotations

from telebot import types


def parse_command(message: types.Message, bot_username: str | None) -> tuple[str, str] | None:
    """('start', 'args') for '/start args' or '/start@our_bot args'; None otherwise."""
    text = message.text or ""
    if not text.startswith("/"):
        return None
    head, _, rest = text[1:].partition(" ")
    name, _, target = head.partition("@")
    if target and bot_username and target.lower() != bot_username.lower():
        return None
    return name.lower()[:32], rest.strip()
