"""Route one update to its handler: commands, then the conversation state, then free text;
buttons by their signed action; pre-checkout queries and successful payments to the payment
handlers. One bad update never stops the bot: the error is logged with the update id and the
user gets a short apology (a pre-checkout query gets a refusal, never silence). A reply that
Telegram cannot take because it is unreachable is not a handler error: the bridge keeps it and
it is delivered once Telegram answers again (`telegram.deferred`)."""

from __future__ import annotations

import logging

from telebot import TeleBot, types

from habitbot import metrics
from habitbot.bot import handlers  # noqa: F401  (registers every handler)
from habitbot.bot.context import Context, StaleButton, resolve_user
from habitbot.bot.parsing import parse_command
from habitbot.bot.registry import registry
from habitbot.runtime import Runtime
from habitbot.services.conversations import ConversationStore
from habitbot.services.users import mark_blocked
from habitbot.telegram.callbacks import CallbackCodec, InvalidCallback

log = logging.getLogger(__name__)

RESETTING_COMMANDS = ("start", "cancel")
# What the polling loop asks Telegram for: everything the dispatcher handles.
ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member", "pre_checkout_query"]


def chat_of(update: types.Update) -> object:
    if update.message:
        return update.message.chat.id
    if update.callback_query:
        return update.callback_query.from_user.id
    if update.my_chat_member:
        return update.my_chat_member.chat.id
    if update.pre_checkout_query:
        # Its own lane: Telegram waits only 10 s for the answer, so it must not queue behind
        # a slow update of the same chat (an export, a heatmap).
        return ("pre_checkout", update.pre_checkout_query.from_user.id)
    return update.update_id


class Dispatcher:
    def __init__(self, runtime: Runtime, bot: TeleBot, bot_username: str | None = None):
        self.runtime = runtime
        self.bot = bot
        self.bot_username = bot_username
        self.codec = CallbackCodec(runtime.settings.bot_token)
        self.store = ConversationStore(runtime.redis)

    def _context(self, tg_user: types.User, chat_id: int, update_id: int,
                 message_id: int | None = None) -> Context:
        return Context(self.runtime, self.bot, self.codec, self.store,
                       resolve_user(self.runtime, tg_user), chat_id, update_id,
                       first_name=tg_user.first_name or "", message_id=message_id)

    def handle(self, update: types.Update) -> None:
        if update.message and update.message.from_user:
            kind = "message"
            self.on_message(update.update_id, update.message)
        elif update.callback_query:
            kind = "callback_query"
            self.on_callback(update.update_id, update.callback_query)
        elif update.my_chat_member:
            kind = "my_chat_member"
            self.on_membership(update.my_chat_member)
        elif update.pre_checkout_query:
            kind = "pre_checkout_query"
            self.on_pre_checkout(update.update_id, update.pre_checkout_query)
        else:
            kind = "other"
        metrics.incr(self.runtime.redis, "habitbot_updates_total", kind=kind)

    def _failed(self, kind: str) -> None:
        metrics.incr(self.runtime.redis, "habitbot_handler_errors_total", kind=kind)

    def on_message(self, update_id: int, message: types.Message) -> None:
        assert message.from_user is not None
        if message.chat.type != "private":
            return
        ctx = self._context(message.from_user, message.chat.id, update_id)
        try:
            if message.successful_payment is not None:
                registry.events["successful_payment"](ctx, message)
                return
            command = parse_command(message, self.bot_username)
            if command is not None:
                name, _args = command
                if name in RESETTING_COMMANDS:
                    ctx.clear_state()
                handler = registry.commands.get(name, registry.commands["_unknown"])
            else:
                handler = registry.states.get(ctx.conversation.state or "",
                                              registry.commands["_text"])
            handler(ctx, message)
        except Exception:
            log.exception("handler failed", extra={"update_id": update_id,
                                                   "user_id": ctx.user.telegram_id})
            self._failed("message")
            self._apologise(ctx)

    def on_callback(self, update_id: int, query: types.CallbackQuery) -> None:
        chat_id = query.message.chat.id if query.message else query.from_user.id
        message_id = query.message.message_id if query.message else None
        ctx = self._context(query.from_user, chat_id, update_id, message_id)
        try:
            callback = self.codec.decode(query.from_user.id, query.data)
            handler = registry.callbacks.get(callback.action)
            if handler is None:
                raise InvalidCallback(callback.action)
            handler(ctx, *callback.args)
        except (InvalidCallback, StaleButton, TypeError, ValueError) as exc:
            log.warning("button refused", extra={"update_id": update_id,
                                                 "user_id": query.from_user.id,
                                                 "reason": repr(exc)[:200]})
            ctx.answer(ctx._("This button is no longer valid."))
        except Exception:
            log.exception("button handler failed", extra={"update_id": update_id,
                                                          "user_id": query.from_user.id})
            self._failed("callback_query")
            ctx.answer(ctx._("Sorry, something went wrong. Please try again."))
        finally:
            self._answer_callback(query, ctx)

    def _answer_callback(self, query: types.CallbackQuery, ctx: Context) -> None:
        try:
            self.bot.answer_callback_query(query.id, text=ctx.answer_text,
                                           show_alert=ctx.answer_alert)
        except Exception as exc:  # a stale query id is not worth more than a log line
            log.info("callback answer failed", extra={"user_id": query.from_user.id,
                                                      "error": str(exc)[:200]})

    def on_pre_checkout(self, update_id: int, query: types.PreCheckoutQuery) -> None:
        """Answered here, in the bot process, on every path: the handler returns None to
        approve or the message Telegram shows the user."""
        ctx = self._context(query.from_user, query.from_user.id, update_id)
        try:
            error = registry.events["pre_checkout_query"](ctx, query)
        except Exception:
            log.exception("pre-checkout handler failed", extra={"update_id": update_id,
                                                               "user_id": query.from_user.id})
            self._failed("pre_checkout_query")
            error = ctx._("Sorry, the payment cannot be accepted right now. Nothing was "
                          "charged; please try again later.")
        try:
            self.bot.answer_pre_checkout_query(query.id, ok=error is None, error_message=error)
        except Exception as exc:
            log.warning("pre-checkout answer failed", extra={"user_id": query.from_user.id,
                                                             "error": str(exc)[:200]})

    def on_membership(self, member: types.ChatMemberUpdated) -> None:
        if member.new_chat_member.status == "kicked":
            try:
                mark_blocked(self.runtime.engine, member.chat.id)
            except Exception:
                log.warning("blocked flag not stored", extra={"user_id": member.chat.id})

    def _apologise(self, ctx: Context) -> None:
        try:
            self.bot.send_message(ctx.chat_id, ctx._(
                "Sorry, something went wrong. Please try again."))
        except Exception:
            log.warning("could not send the apology", extra={"user_id": ctx.user.telegram_id})
