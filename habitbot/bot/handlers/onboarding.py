"""First contact: language, then timezone (three ways, confirmed with the local time)."""

from __future__ import annotations

from telebot import types

from habitbot.bot import cards
from habitbot.bot.context import Context, StaleButton, escape
from habitbot.bot.handlers import timezone
from habitbot.bot.registry import registry
from habitbot.i18n import LANGUAGES
from habitbot.services.users import set_language

LANGUAGE_NAMES = {"ru": "🇷🇺 Русский", "en": "🇬🇧 English"}
LANGUAGE_STATE = "onb:language"


def begin(ctx: Context) -> None:
    ctx.set_state(LANGUAGE_STATE)
    markup = types.InlineKeyboardMarkup()
    markup.row(*(ctx.button(LANGUAGE_NAMES[code], "onblang", code) for code in LANGUAGES))
    ctx.reply(ctx._("Hi, {name}! I am HabitBot: I help you build habits with reminders at the "
                    "right time, streaks and statistics.", name=escape(ctx.first_name))
              + "\n\n" + ctx._("First, choose your language:"), markup)


@registry.callback("onblang")
def choose_language(ctx: Context, language: str) -> None:
    if ctx.conversation.state != LANGUAGE_STATE or language not in LANGUAGES:
        raise StaleButton("language step is over")
    if ctx.limited:
        raise StaleButton("no database")
    ctx.use(set_language(ctx.runtime.engine, ctx.user.telegram_id, language))
    cards.show(ctx, ctx._("Language: {language}", language=LANGUAGE_NAMES[language]))
    timezone.ask(ctx, "onb")


def finish(ctx: Context) -> None:
    ctx.bot.send_message(ctx.chat_id, ctx._(
        "All set! Create your first habit with /new, or send /help to see everything I can "
        "do."), reply_markup=types.ReplyKeyboardRemove())


timezone.FINISHERS["onb"] = finish
