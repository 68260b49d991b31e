"""Per-update context: who is talking, in which language, and how to answer them.

Handlers get a `Context` and never call the Bot API themselves except through it: replies and
edits (in place when the update came from a button), HTML-escaped user text, signed buttons.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from telebot import TeleBot, types
from telebot.apihelper import ApiTelegramException

from habitbot.i18n import Translator
from habitbot.runtime import Runtime
from habitbot.services.conversations import Conversation, ConversationStore
from habitbot.services.users import UserContext, minimal_user, touch_user
from habitbot.telegram.callbacks import CallbackCodec

log = logging.getLogger(__name__)

PARSE_MODE = "HTML"


class StaleButton(Exception):
    """The button belongs to a step that is over: answer politely, change nothing."""


def escape(text: str | None) -> str:
    return html.escape(text or "", quote=False)


@dataclass
class Context:
    runtime: Runtime
    bot: TeleBot
    codec: CallbackCodec
    store: ConversationStore
    user: UserContext
    chat_id: int
    update_id: int
    first_name: str = ""
    message_id: int | None = None  # the bot message a pressed button belongs to
    answer_text: str | None = None
    answer_alert: bool = False
    t: Translator = field(init=False)
    _conversation: Conversation | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.t = Translator(self.user.language)

    # -- the user --------------------------------------------------------------------------
    @property
    def limited(self) -> bool:
        return self.user.minimal

    def use(self, user: UserContext) -> None:
        """After a settings change: the new state, the new language."""
        self.user = user
        self.t = Translator(user.language)

    def _(self, message: str, **params: object) -> str:
        return self.t.gettext(message, **params)

    # -- conversation state ----------------------------------------------------------------
    @property
    def conversation(self) -> Conversation:
        if self._conversation is None:
            self._conversation = self.store.get(self.user.telegram_id)
        return self._conversation

    def set_state(self, state: str, **data: Any) -> None:
        self._conversation = Conversation(state, data)
        self.store.set(self.user.telegram_id, state, data)

    def clear_state(self) -> None:
        self._conversation = Conversation()
        self.store.clear(self.user.telegram_id)

    # -- answering -------------------------------------------------------------------------
    def button(self, text: str, action: str, *args: object) -> types.InlineKeyboardButton:
        return types.InlineKeyboardButton(
            text, callback_data=self.codec.encode(self.user.telegram_id, action, *args))

    def _limited_notice(self) -> str:
        return self._("Some features are temporarily unavailable. Your data is safe; "
                      "please try again a little later.")

    def reply(self, text: str, markup: Any = None) -> types.Message:
        if self.limited:
            text = f"{text}\n\n{self._limited_notice()}"
        return self.bot.send_message(self.chat_id, text, parse_mode=PARSE_MODE,
                                     reply_markup=markup)

    def show(self, text: str, markup: types.InlineKeyboardMarkup | None = None) -> None:
        """Edit the message whose button was pressed; send a new one otherwise."""
        if self.message_id is None:
            self.reply(text, markup)
            return
        try:
            self.bot.edit_message_text(text, self.chat_id, self.message_id,
                                       parse_mode=PARSE_MODE, reply_markup=markup)
        except ApiTelegramException as exc:
            if "message is not modified" not in str(exc.description):
                raise

    def answer(self, text: str, alert: bool = False) -> None:
        self.answer_text, self.answer_alert = text, alert


def resolve_user(runtime: Runtime, tg_user: types.User) -> UserContext:
    """Load or create the user; in DEGRADED mode or with the database down, a minimal user
    built from the update alone."""
    if not runtime.guard.degraded:
        try:
            user = touch_user(runtime.engine, tg_user.id, tg_user.username,
                              tg_user.first_name, tg_user.language_code)
            runtime.sender.unblock(tg_user.id)
            return user
        except SQLAlchemyError as exc:
            log.warning("user store unavailable, using a minimal user",
                        extra={"user_id": tg_user.id, "error": type(exc).__name__})
    return minimal_user(tg_user.id, tg_user.language_code)
