"""Command handlers. Thin: parse the update, call services, render with the translator."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from telebot import TeleBot, types

from habitbot.bot.context import Context, resolve
from habitbot.i18n import N_
from habitbot.runtime import Runtime

log = logging.getLogger(__name__)

COMMANDS = ("start", "help", "new", "habits", "today", "stats", "settings", "premium",
            "balance", "cancel")


def _limited_notice(ctx: Context) -> str:
    return ctx.t.gettext("Some features are temporarily unavailable. Your data is safe; "
                         "please try again a little later.")


def reply(bot: TeleBot, message: types.Message, ctx: Context, text: str) -> None:
    if ctx.limited:
        text = f"{text}\n\n{_limited_notice(ctx)}"
    bot.send_message(message.chat.id, text)


def safely(runtime: Runtime, bot: TeleBot,
           handler: Callable[[types.Message, Context], None]) -> Callable[[types.Message], None]:
    """One bad update never stops the bot: log it with the update's ids, apologise."""

    def wrapped(message: types.Message) -> None:
        if message.from_user is None:  # channel posts and the like: nobody to answer
            return
        ctx = resolve(runtime, message.from_user)
        try:
            handler(message, ctx)
        except Exception:
            log.exception("handler failed", extra={"user_id": ctx.user.telegram_id,
                                                   "message_id": message.message_id})
            try:
                bot.send_message(message.chat.id, ctx.t.gettext(
                    "Sorry, something went wrong. Please try again."))
            except Exception:
                log.warning("could not send the apology", extra={
                    "user_id": ctx.user.telegram_id})

    return wrapped


def register(bot: TeleBot, runtime: Runtime) -> None:
    def start(message: types.Message, ctx: Context) -> None:
        name = message.from_user.first_name if message.from_user else ""
        reply(bot, message, ctx, ctx.t.gettext(
            "Hi, {name}! I am HabitBot: I help you build habits with reminders at the right "
            "time, streaks and statistics.", name=name))

    def help_(message: types.Message, ctx: Context) -> None:
        reply(bot, message, ctx, ctx.t.gettext(
            "Commands:\n/new — a new habit\n/habits — your habits\n/today — today's check-ins\n"
            "/stats — statistics\n/settings — language, timezone, notifications\n"
            "/premium — premium\n/balance — balance\n/cancel — cancel the current action"))

    def not_yet(message: types.Message, ctx: Context) -> None:
        reply(bot, message, ctx, ctx.t.gettext("This section is coming soon."))

    def fallback(message: types.Message, ctx: Context) -> None:
        reply(bot, message, ctx, ctx.t.gettext(
            "I did not understand that. Send /help to see what I can do."))

    bot.register_message_handler(safely(runtime, bot, start), commands=["start"])
    bot.register_message_handler(safely(runtime, bot, help_), commands=["help"])
    bot.register_message_handler(safely(runtime, bot, not_yet),
                                 commands=[c for c in COMMANDS if c not in ("start", "help")])
    bot.register_message_handler(safely(runtime, bot, fallback), func=lambda m: True,
                                 content_types=["text", "photo", "sticker", "voice", "document",
                                                "location", "video", "audio", "contact"])


def command_menu(translate: Callable[[str], str]) -> list[dict[str, Any]]:
    descriptions = {
        "start": N_("Start"), "help": N_("Help"), "new": N_("New habit"),
        "habits": N_("My habits"), "today": N_("Today"), "stats": N_("Statistics"),
        "settings": N_("Settings"), "premium": N_("Premium"), "balance": N_("Balance"),
        "cancel": N_("Cancel"),
    }
    return [{"command": c, "description": translate(descriptions[c])} for c in COMMANDS]
