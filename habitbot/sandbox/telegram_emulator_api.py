"""Bot API methods of the emulator: updates, webhooks, sending, editing and callbacks.

Each method takes the bot and its :class:`Params` and returns the ``result`` of Telegram's
envelope, or raises :class:`ApiError`. Payments, commands, files and small settings live in
``telegram_emulator_api_extra``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from habitbot.sandbox.telegram_emulator_limits import retry_after_seconds
from habitbot.sandbox.telegram_emulator_state import (
    ALL_UPDATE_TYPES,
    DEFAULT_ALLOWED_UPDATES,
    BotState,
    ChatState,
    StoredMessage,
    UserInfo,
    World,
    now_date,
)
from habitbot.sandbox.telegram_emulator_text import (
    MAX_CAPTION_LENGTH,
    MAX_TEXT_LENGTH,
    ApiError,
    FormattedText,
    bad_request,
    format_text,
    inline_markup,
    parse_json_param,
    parse_reply_markup,
)

LONG_POLL_MAX_TIMEOUT = 50.0
QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
CONFLICT_OTHER_POLL = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is "
    "running"
)
VISIBLE = ("text", "entities", "reply_markup")
CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first"
)


@dataclass
class Upload:
    """A file part of a multipart request."""

    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Params:
    """Request parameters as Telegram sees them: strings, or JSON values from a JSON body."""

    values: dict[str, Any]
    files: dict[str, Upload] = field(default_factory=dict)

    def raw(self, name: str) -> Any:
        return self.values.get(name)

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        return json.dumps(value)

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool | int):
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            try:
                return int(float(str(value)))
            except ValueError:
                return default

    def number(self, name: str, default: float = 0.0) -> float:
        try:
            return float(self.text(name) or default)
        except ValueError:
            return default

    def flag(self, name: str) -> bool:
        value = self.values.get(name)
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() in ("true", "1") if value is not None else False

    def json(self, name: str, what: str) -> Any:
        value = self.values.get(name)
        return None if value is None or value == "" else parse_json_param(value, what)

    def file(self, name: str) -> Upload | None:
        upload = self.files.get(name)
        if upload is None:
            reference = self.text(name) or ""
            if reference.startswith("attach://"):
                upload = self.files.get(reference[len("attach://"):])
        return upload


class WithDescription(NamedTuple):
    """A successful result that Telegram accompanies with a ``description``."""

    result: Any
    description: str


Method = Callable[[BotState, Params], Any]


def chat_id_param(params: Params) -> int:
    value = params.raw("chat_id")
    if value is None or value == "":
        raise bad_request("chat_id is empty")
    chat_id = params.integer("chat_id")
    if chat_id is None or (isinstance(value, str) and value.strip().startswith("@")):
        raise bad_request("chat not found")
    return chat_id


def too_many_requests(wait: float) -> ApiError:
    seconds = retry_after_seconds(wait)
    return ApiError(429, f"Too Many Requests: retry after {seconds}", seconds)


class CoreMethods:
    """getUpdates, webhooks, sendMessage, edits, deleteMessage and answerCallbackQuery."""

    def __init__(self, world: World) -> None:
        self.world = world

    def methods(self) -> dict[str, Method]:
        return {
            "getMe": lambda bot, _: bot.me(),
            "getUpdates": self.get_updates,
            "setWebhook": self.set_webhook,
            "deleteWebhook": self.delete_webhook,
            "getWebhookInfo": self.get_webhook_info,
            "sendMessage": self.send_message,
            "editMessageText": self.edit_message_text,
            "editMessageCaption": self.edit_message_caption,
            "editMessageReplyMarkup": self.edit_message_reply_markup,
            "deleteMessage": self.delete_message,
            "answerCallbackQuery": self.answer_callback_query,
            "sendChatAction": self.send_chat_action,
        }

    # ------------------------------------------------------------ updates

    def get_updates(self, bot: BotState, params: Params) -> list[dict[str, Any]]:
        offset = params.integer("offset", 0) or 0
        limit = min(max(params.integer("limit", 100) or 100, 1), 100)
        timeout = min(max(params.number("timeout"), 0.0), LONG_POLL_MAX_TIMEOUT)
        world = self.world
        with world.lock:
            if bot.webhook.get("url"):
                raise ApiError(409, CONFLICT_WEBHOOK)
            _set_allowed_updates(bot, params.raw("allowed_updates"))
            if offset:
                bot.confirm(offset)
            batch = bot.pending(limit)
            if batch or timeout <= 0 or world.stopping.is_set():
                return batch
            conflict = self._long_poll(bot, limit, timeout)
            if conflict is None:
                return bot.pending(limit)
            delay = self._conflict_delay(bot)
        if delay > 0:
            world.stopping.wait(delay)
        raise ApiError(409, conflict)

    def _long_poll(self, bot: BotState, limit: int, timeout: float) -> str | None:
        """Wait (lock held) until updates arrive; returns a conflict message if superseded."""
        bot.poll_serial += 1
        me = bot.poll_serial
        if bot.active_poll is not None:
            bot.aborted_polls[bot.active_poll] = CONFLICT_OTHER_POLL
        bot.active_poll = me
        self.world.notify()
        deadline = time.monotonic() + timeout
        try:
            while True:
                if me in bot.aborted_polls:
                    return bot.aborted_polls[me]
                remaining = deadline - time.monotonic()
                if bot.pending(1) or remaining <= 0 or self.world.stopping.is_set():
                    return None
                self.world.queued.wait(remaining)
        finally:
            bot.aborted_polls.pop(me, None)
            if bot.active_poll == me:
                bot.active_poll = None

    def _conflict_delay(self, bot: BotState) -> float:
        now = time.monotonic()
        if now >= bot.next_conflict_at:
            bot.next_conflict_at = now + self.world.conflict_delay
            return 0.0
        return self.world.conflict_delay

    def set_webhook(self, bot: BotState, params: Params) -> WithDescription:
        url = (params.text("url") or "").strip()
        if not url:
            return self.delete_webhook(bot, params)
        if not url.lower().startswith("https://"):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        with self.world.lock:
            if params.flag("drop_pending_updates"):
                bot.updates.clear()
            _set_allowed_updates(bot, params.raw("allowed_updates"))
            bot.webhook = {
                "url": url,
                "max_connections": params.integer("max_connections", 40),
                "secret_token": params.text("secret_token") or "",
            }
            if bot.active_poll is not None:
                bot.aborted_polls[bot.active_poll] = "Conflict: terminated by setWebhook request"
            self.world.notify()
        return WithDescription(True, "Webhook was set")

    def delete_webhook(self, bot: BotState, params: Params) -> WithDescription:
        with self.world.lock:
            if params.flag("drop_pending_updates"):
                bot.updates.clear()
            had_url = bool(bot.webhook.get("url"))
            bot.webhook = {}
        description = "Webhook was deleted" if had_url else "Webhook is already deleted"
        return WithDescription(True, description)

    def get_webhook_info(self, bot: BotState, params: Params) -> dict[str, Any]:
        with self.world.lock:
            info: dict[str, Any] = {
                "url": bot.webhook.get("url", ""),
                "has_custom_certificate": False,
                "pending_update_count": len(bot.updates),
            }
            if info["url"]:
                info["max_connections"] = bot.webhook.get("max_connections", 40)
                if bot.allowed_updates != DEFAULT_ALLOWED_UPDATES:
                    info["allowed_updates"] = sorted(bot.allowed_updates)
        return info

    # ------------------------------------------------------------ sending

    def deliver(
        self,
        bot: BotState,
        chat_id: int,
        method: str,
        build: Callable[[int, float], StoredMessage],
        paid: bool = False,
    ) -> dict[str, Any]:
        """Common path of every send: chat checks, flood limits, storage, send log."""
        world = self.world
        with world.lock:
            user, chat = world.resolve_chat(bot, chat_id)
        wait = bot.limiter.acquire(chat_id, paid=paid)
        if wait > 0:
            raise too_many_requests(wait)
        ts = time.time()
        with world.lock:
            message = build(chat.allocate_id(), ts)
            world.add_message(chat, message)
            result = message.to_api(bot, user)
        world.stats.send(chat_id, method, message.message_id, ts)
        return result

    def formatted(self, params: Params, field_name: str, limit: int) -> FormattedText:
        raw = params.text(field_name) or ""
        entities = params.json("entities" if field_name == "text" else "caption_entities",
                               "message entities")
        formatted = format_text(raw, params.text("parse_mode"), entities,
                                self.world.strict_html_entities)
        if field_name == "text" and not formatted.text:
            raise bad_request("message text is empty")
        if len(formatted.text) > limit:
            raise bad_request("message is too long" if field_name == "text"
                              else "message caption is too long")
        return formatted

    def send_message(self, bot: BotState, params: Params) -> dict[str, Any]:
        chat_id = chat_id_param(params)
        formatted = self.formatted(params, "text", MAX_TEXT_LENGTH)
        markup = parse_reply_markup(params.raw("reply_markup"))
        options = send_options(params)

        def build(message_id: int, ts: float) -> StoredMessage:
            return StoredMessage(
                message_id, chat_id, "bot", "text", int(ts), ts, text=formatted.text,
                entities=formatted.entities, raw_text=params.text("text"),
                parse_mode=params.text("parse_mode"), reply_markup=markup, hidden=options,
            )

        return self.deliver(bot, chat_id, "sendMessage", build, paid=options["paid_broadcast"])

    # ------------------------------------------------------------ editing

    def _target(self, params: Params) -> tuple[int, int]:
        if params.text("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")
        chat_id = chat_id_param(params)
        message_id = params.integer("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        return chat_id, message_id

    def _edit(
        self,
        bot: BotState,
        params: Params,
        change: Callable[[StoredMessage], dict[str, Any]],
    ) -> dict[str, Any]:
        """Validate an edit under the lock, check flood limits, then apply ``change``'s fields."""
        chat_id, message_id = self._target(params)
        world = self.world
        with world.lock:
            user, chat = world.resolve_chat(bot, chat_id)
            message = _editable(chat, message_id)
            fields = change(message)
            if all(getattr(message, key) == fields[key] for key in fields if key in VISIBLE):
                raise bad_request(NOT_MODIFIED)
        wait = bot.limiter.acquire(chat_id, chat_only=True)
        if wait > 0:
            raise too_many_requests(wait)
        with world.lock:
            for key, value in fields.items():
                setattr(message, key, value)
            message.edited = True
            message.edit_date = now_date()
            chat.version += 1
            world.notify_chat()
            result = message.to_api(bot, user)
        world.stats.edit()
        return result

    def _text_change(self, params: Params, field_name: str) -> Callable[[StoredMessage], dict]:
        limit = MAX_TEXT_LENGTH if field_name == "text" else MAX_CAPTION_LENGTH
        formatted = self.formatted(params, field_name, limit)
        markup = inline_markup(parse_reply_markup(params.raw("reply_markup")))

        def change(message: StoredMessage) -> dict[str, Any]:
            if field_name == "text" and message.kind != "text":
                raise bad_request("there is no text in the message to edit")
            if field_name == "caption" and message.kind not in ("photo", "document"):
                raise bad_request("there is no caption in the message to edit")
            return {
                "text": formatted.text,
                "entities": formatted.entities,
                "reply_markup": markup,
                "raw_text": params.text(field_name),
                "parse_mode": params.text("parse_mode"),
            }

        return change

    def edit_message_text(self, bot: BotState, params: Params) -> dict[str, Any]:
        return self._edit(bot, params, self._text_change(params, "text"))

    def edit_message_caption(self, bot: BotState, params: Params) -> dict[str, Any]:
        return self._edit(bot, params, self._text_change(params, "caption"))

    def edit_message_reply_markup(self, bot: BotState, params: Params) -> dict[str, Any]:
        markup = inline_markup(parse_reply_markup(params.raw("reply_markup")))
        return self._edit(bot, params, lambda message: {"reply_markup": markup})

    def delete_message(self, bot: BotState, params: Params) -> bool:
        chat_id = chat_id_param(params)
        message_id = params.integer("message_id")
        world = self.world
        with world.lock:
            if chat_id not in world.users:
                raise bad_request("chat not found")
            chat = bot.chat(chat_id)
            message = chat.messages.get(message_id) if message_id is not None else None
            if message is None or message.deleted:
                raise bad_request("message to delete not found")
            message.deleted = True
            chat.version += 1
            world.notify_chat()
        return True

    # ------------------------------------------------------------ callbacks and actions

    def answer_callback_query(self, bot: BotState, params: Params) -> bool:
        query_id = params.text("callback_query_id") or ""
        answer = {
            "callback_query_id": query_id,
            "text": params.text("text"),
            "show_alert": params.flag("show_alert"),
            "url": params.text("url"),
            "cache_time": params.integer("cache_time", 0),
            "answered_at": time.time(),
        }
        world = self.world
        with world.lock:
            record = bot.queries.get(query_id)
            if (
                record is None
                or record.kind != "callback"
                or record.answered
                or time.time() - record.created > world.callback_ttl
            ):
                raise bad_request(QUERY_TOO_OLD)
            record.answered = True
            record.answer = answer
            chat = bot.chat(record.user_id)
            message = record.payload.get("message", {})
            chat.callback_answers.append(
                {**answer, "message_id": message.get("message_id"),
                 "data": record.payload.get("data")}
            )
            chat.version += 1
            world.notify_chat()
        return True

    def send_chat_action(self, bot: BotState, params: Params) -> bool:
        chat_id = chat_id_param(params)
        action = (params.text("action") or "").strip()
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        world = self.world
        with world.lock:
            _, chat = world.resolve_chat(bot, chat_id)
            chat.actions.append({"action": action, "ts": time.time()})
            chat.version += 1
            world.notify_chat()
        return True


CHAT_ACTIONS = frozenset(
    {"typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
     "upload_document", "choose_sticker", "find_location", "record_video_note",
     "upload_video_note"}
)


def send_options(params: Params) -> dict[str, Any]:
    """Delivery options of a send, kept for the transcript."""
    return {
        "disable_notification": params.flag("disable_notification"),
        "protect_content": params.flag("protect_content"),
        "paid_broadcast": params.flag("allow_paid_broadcast"),
    }


def _editable(chat: ChatState, message_id: int) -> StoredMessage:
    message = chat.messages.get(message_id)
    if message is None or message.deleted:
        raise bad_request("message to edit not found")
    if message.sender != "bot":
        raise bad_request("message can't be edited")
    return message


def _set_allowed_updates(bot: BotState, value: Any) -> None:
    """Apply ``allowed_updates`` like Telegram: absent or malformed keeps, empty resets."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except ValueError:
            return
    if not isinstance(value, list):
        return
    names = {str(name).lower() for name in value if isinstance(name, str)}
    chosen = frozenset(names & ALL_UPDATE_TYPES)
    bot.allowed_updates = chosen or DEFAULT_ALLOWED_UPDATES


def user_of(world: World, user_id: int) -> UserInfo:
    """The user behind a private chat, registering an unknown one (caller holds the lock)."""
    return world.users.get(user_id) or world.register_user(user_id)
