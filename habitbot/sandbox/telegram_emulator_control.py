"""What a test or the sandbox chat page can make the emulated Telegram do.

These operations play the user's side (writing, pressing buttons, blocking, paying) and let the
caller inspect and steer the emulator (transcripts, stats, faults, limits). The HTTP control API
and the Python methods of ``TelegramEmulator`` both call them.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from typing import Any

from habitbot.sandbox.telegram_emulator_state import (
    BotState,
    ChatState,
    FileRecord,
    QueryRecord,
    StoredMessage,
    UserInfo,
    World,
    make_file,
    new_id,
    now_date,
)
from habitbot.sandbox.telegram_emulator_text import command_entities

PAYMENT_TERMS = ("invoice_payload", "currency", "total_amount")


class ControlError(Exception):
    """A refused control request; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ControlError(400, f"{name} must be an integer") from None


def _user_id(value: Any) -> int:
    user_id = _int(value, "user_id")
    if user_id <= 0:
        raise ControlError(400, "user_id must be positive")
    return user_id


class Control:
    """The control operations over one :class:`World`."""

    def __init__(self, world: World) -> None:
        self.world = world

    def bot(self, token: str | None) -> BotState:
        try:
            return self.world.bot(token)
        except KeyError:
            raise ControlError(404, "unknown bot token") from None

    # ------------------------------------------------------------ users and messages

    def add_user(
        self,
        user_id: int,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        last_name: str | None = None,
    ) -> dict[str, Any]:
        user_id = _user_id(user_id)
        with self.world.lock:
            user = self.world.register_user(user_id, first_name, username, language_code,
                                            last_name)
            return user.to_api()

    def _incoming(
        self, bot: BotState, user: UserInfo, chat: ChatState, kind: str, **fields: Any
    ) -> tuple[StoredMessage, int | None]:
        """Store a message from the user and queue its update (caller holds the lock)."""
        ts = time.time()
        if chat.blocked:
            self._member_change(bot, user, chat, blocked=False)
        message = StoredMessage(chat.allocate_id(), user.user_id, "user", kind, int(ts), ts,
                                **fields)
        self.world.add_message(chat, message)
        update_id = bot.queue_update("message", message.to_api(bot, user))
        self.world.notify()
        return message, update_id

    def inject_message(
        self,
        user_id: int,
        text: str | None = None,
        token: str | None = None,
        language_code: str | None = None,
        first_name: str | None = None,
        username: str | None = None,
        location: dict[str, float] | None = None,
        sticker: bool = False,
        photo: bool = False,
        voice: bool = False,
        document: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The user writes to the bot; returns ``update_id`` and ``message_id``."""
        user_id = _user_id(user_id)
        bot = self.bot(token)
        kind, content = self._content(bot, location, sticker, photo, voice, document)
        if kind == "text" and not text:
            raise ControlError(400, "text is required for a text message")
        entities = command_entities(text) if kind == "text" and text else []
        with self.world.lock:
            user = self.world.register_user(user_id, first_name, username, language_code)
            chat = bot.chat(user_id)
            message, update_id = self._incoming(
                bot, user, chat, kind, text=text, entities=entities, content=content
            )
        return {"update_id": update_id, "message_id": message.message_id}

    def _content(
        self,
        bot: BotState,
        location: dict[str, float] | None,
        sticker: bool,
        photo: bool,
        voice: bool,
        document: dict[str, Any] | None,
    ) -> tuple[str, dict[str, Any]]:
        unique = new_id()[:16]
        if location:
            try:
                point = {"latitude": float(location["latitude"]),
                         "longitude": float(location["longitude"])}
            except (KeyError, TypeError, ValueError):
                raise ControlError(400, "location needs latitude and longitude") from None
            return "location", {"location": point}
        if sticker:
            return "sticker", {"sticker": {
                "file_id": new_id("CAAC"), "file_unique_id": unique, "type": "regular",
                "width": 512, "height": 512, "is_animated": False, "is_video": False,
                "emoji": "\N{THUMBS UP SIGN}"}}
        if photo:
            return "photo", {"photo": [{"file_id": new_id("AgAC"), "file_unique_id": unique,
                                        "file_size": 1024, "width": 640, "height": 480}]}
        if voice:
            return "voice", {"voice": {"file_id": new_id("AwAC"), "file_unique_id": unique,
                                       "duration": 2, "mime_type": "audio/ogg",
                                       "file_size": 2048}}
        if document:
            return "document", {"document": self._user_document(bot, document).to_api()}
        return "text", {}

    def _user_document(self, bot: BotState, document: dict[str, Any]) -> FileRecord:
        try:
            data = base64.b64decode(document.get("content_base64") or "", validate=True)
        except (binascii.Error, ValueError):
            raise ControlError(400, "content_base64 is not valid base64") from None
        record = make_file("document", document.get("file_name") or "document", data,
                           document.get("mime_type"), self.world.file_store_cap)
        with self.world.lock:
            # The same file sent again keeps its file_unique_id, as in Telegram.
            same = next((r for r in bot.files.values() if r.source == "upload"
                         and r.content is not None and r.content == data), None)
            if same is not None:
                record.file_unique_id = same.file_unique_id
            bot.files[record.file_id] = record
        return record

    def press(
        self,
        user_id: int,
        message_id: int | None = None,
        data: str | None = None,
        button_text: str | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """The user presses an inline button (or sends any ``data``, e.g. a forged one)."""
        user_id = _user_id(user_id)
        bot = self.bot(token)
        with self.world.lock:
            user = self.world.register_user(user_id)
            chat = bot.chat(user_id)
            message = chat.messages.get(_int(message_id, "message_id")) if message_id else None
            if button_text is not None:
                data = _button_data(message, button_text)
            if data is None:
                raise ControlError(400, "data or button_text is required")
            if message is not None and not message.deleted:
                shown = message.to_api(bot, user)
            else:
                shown = {"chat": user.chat(), "message_id": message_id or 0, "date": 0}
            query_id = str(secrets.randbits(62))
            payload = {"id": query_id, "from": user.to_api(), "message": shown,
                       "chat_instance": str(user_id * 7919 + bot.bot_id), "data": data}
            bot.queries[query_id] = _query(query_id, "callback", user_id, payload)
            update_id = bot.queue_update("callback_query", payload)
            self.world.notify()
        return {"update_id": update_id, "callback_query_id": query_id}

    # ------------------------------------------------------------ block state

    def _member_change(
        self, bot: BotState, user: UserInfo, chat: ChatState, blocked: bool
    ) -> int | None:
        chat.blocked = blocked
        chat.version += 1
        me = bot.user_api()
        old, new = ("member", "kicked") if blocked else ("kicked", "member")
        new_member: dict[str, Any] = {"user": me, "status": new}
        if blocked:
            new_member["until_date"] = 0
        payload = {
            "chat": user.chat(),
            "from": user.to_api(),
            "date": now_date(),
            "old_chat_member": {"user": me, "status": old},
            "new_chat_member": new_member,
        }
        update_id = bot.queue_update("my_chat_member", payload)
        self.world.notify()
        return update_id

    def set_blocked(self, user_id: int, blocked: bool, token: str | None = None) -> dict[str, Any]:
        """Block or unblock the bot; Telegram then sends a ``my_chat_member`` update."""
        user_id = _user_id(user_id)
        bot = self.bot(token)
        with self.world.lock:
            user = self.world.register_user(user_id)
            chat = bot.chat(user_id)
            update_id = None
            if chat.blocked != blocked:
                update_id = self._member_change(bot, user, chat, blocked)
        return {"ok": True, "blocked": blocked, "update_id": update_id}

    def set_deactivated(
        self, user_id: int, deactivated: bool = True, token: str | None = None
    ) -> dict[str, Any]:
        user_id = _user_id(user_id)
        bot = self.bot(token)
        with self.world.lock:
            self.world.register_user(user_id)
            bot.chat(user_id).deactivated = deactivated
        return {"ok": True, "deactivated": deactivated}

    # ------------------------------------------------------------ payments

    def _invoice_terms(
        self, chat: ChatState, invoice_message_id: Any, fields: dict[str, Any]
    ) -> dict[str, Any]:
        if invoice_message_id:
            message = chat.messages.get(_int(invoice_message_id, "invoice_message_id"))
            if message is None or message.kind != "invoice":
                raise ControlError(404, "no invoice with that message_id in this chat")
            return {"invoice_payload": message.hidden["invoice_payload"],
                    "currency": message.content["invoice"]["currency"],
                    "total_amount": message.content["invoice"]["total_amount"]}
        required = ("invoice_payload", "currency", "total_amount")
        missing = [key for key in required if fields.get(key) is None]
        if missing:
            raise ControlError(400, f"missing {', '.join(missing)} (or give invoice_message_id)")
        return {"invoice_payload": str(fields["invoice_payload"]),
                "currency": str(fields["currency"]),
                "total_amount": _int(fields["total_amount"], "total_amount")}

    def pre_checkout(
        self,
        user_id: int,
        invoice_message_id: int | None = None,
        token: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The user confirms an invoice; the bot gets a ``pre_checkout_query`` to answer."""
        user_id = _user_id(user_id)
        bot = self.bot(token)
        with self.world.lock:
            user = self.world.register_user(user_id)
            terms = self._invoice_terms(bot.chat(user_id), invoice_message_id, fields)
            query_id = str(secrets.randbits(62))
            payload = {"id": query_id, "from": user.to_api(), **terms}
            bot.queries[query_id] = _query(query_id, "pre_checkout", user_id, payload)
            update_id = bot.queue_update("pre_checkout_query", payload)
            self.world.notify()
        return {"update_id": update_id, "pre_checkout_query_id": query_id}

    def pre_checkout_answer(self, query_id: str, token: str | None = None) -> dict[str, Any]:
        bot = self.bot(token)
        with self.world.lock:
            record = bot.queries.get(str(query_id))
            if record is None or record.kind != "pre_checkout":
                raise ControlError(404, "unknown pre_checkout_query_id")
            return {"pre_checkout_query_id": record.query_id, "answered": record.answered,
                    **(record.answer or {})}

    def pay(
        self,
        user_id: int,
        invoice_message_id: int | None = None,
        pre_checkout_query_id: str | None = None,
        token: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The payment succeeds: a message with ``successful_payment`` reaches the bot."""
        user_id = _user_id(user_id)
        bot = self.bot(token)
        with self.world.lock:
            user = self.world.register_user(user_id)
            chat = bot.chat(user_id)
            terms = self._invoice_terms(chat, invoice_message_id, fields)
            if pre_checkout_query_id is not None:
                _require_approved(bot, str(pre_checkout_query_id), user_id, terms)
            stars = terms["currency"] == "XTR"
            charge_id = new_id("stxT" if stars else "tgT")
            payment = {**terms, "telegram_payment_charge_id": charge_id,
                       "provider_payment_charge_id": "" if stars else new_id("prov_")}
            message, update_id = self._incoming(
                bot, user, chat, "successful_payment",
                content={"successful_payment": payment},
            )
            bot.payments[charge_id] = {**payment, "user_id": user_id, "refunded": False,
                                       "paid_at": time.time()}
        return {"update_id": update_id, "message_id": message.message_id,
                "telegram_payment_charge_id": charge_id}

    def checkout(
        self,
        user_id: int,
        invoice_message_id: int | None = None,
        token: str | None = None,
        timeout: float | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The user pays an invoice the way Telegram runs it: a ``pre_checkout_query`` goes to
        the bot, which must answer within the deadline (10 s, like Telegram); only an
        approval leads to the ``successful_payment`` message. ``outcome`` is ``paid``,
        ``declined`` (with the bot's ``error_message``) or ``timeout`` (no payment)."""
        started = self.pre_checkout(user_id, invoice_message_id, token, **fields)
        query_id = started["pre_checkout_query_id"]
        bot = self.bot(token)
        world = self.world
        limit = world.pre_checkout_ttl if timeout is None else min(float(timeout),
                                                                    world.pre_checkout_ttl)
        deadline = time.monotonic() + max(limit, 0.0)
        with world.lock:
            record = bot.queries[query_id]
            while not record.answered and not world.stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                world.changed.wait(remaining)
            answer = dict(record.answer or {})
        result: dict[str, Any] = {"pre_checkout_query_id": query_id,
                                  "pre_checkout_update_id": started["update_id"]}
        if not answer:
            return {**result, "outcome": "timeout"}
        if not answer.get("ok"):
            return {**result, "outcome": "declined", "error_message": answer["error_message"]}
        paid = self.pay(user_id, invoice_message_id, query_id, token,
                        **{k: v for k, v in fields.items() if k in PAYMENT_TERMS})
        return {**result, "outcome": "paid", **paid}

    def replay_payment(self, user_id: int, charge_id: str,
                       token: str | None = None) -> dict[str, Any]:
        """Deliver the ``successful_payment`` message of an earlier charge again, as Telegram
        does when a bot did not confirm the update (a crash before the next getUpdates)."""
        user_id = _user_id(user_id)
        bot = self.bot(token)
        with self.world.lock:
            payment = bot.payments.get(str(charge_id))
            if payment is None or payment["user_id"] != user_id:
                raise ControlError(404, "unknown telegram_payment_charge_id for this user")
            user = self.world.register_user(user_id)
            content = {key: payment[key] for key in (
                *PAYMENT_TERMS, "telegram_payment_charge_id", "provider_payment_charge_id")}
            message, update_id = self._incoming(
                bot, user, bot.chat(user_id), "successful_payment",
                content={"successful_payment": content},
            )
        return {"update_id": update_id, "message_id": message.message_id,
                "telegram_payment_charge_id": charge_id}

    def payments(self, token: str | None = None) -> list[dict[str, Any]]:
        bot = self.bot(token)
        with self.world.lock:
            return [dict(p) for p in bot.payments.values()]

    # ------------------------------------------------------------ inspection

    def transcript(
        self,
        chat_id: int,
        token: str | None = None,
        include_deleted: bool = False,
        wait_version: int | None = None,
        timeout: float = 0.0,
    ) -> dict[str, Any]:
        """The chat as the user sees it; with ``wait_version`` waits for a newer version."""
        chat_id = _int(chat_id, "chat_id")
        bot = self.bot(token)
        world = self.world
        deadline = time.monotonic() + min(max(timeout, 0.0), 60.0)
        with world.lock:
            while wait_version is not None and not world.stopping.is_set():
                chat = bot.chats.get(chat_id)
                remaining = deadline - time.monotonic()
                if (chat.version if chat else 0) > wait_version or remaining <= 0:
                    break
                world.changed.wait(remaining)
            return _transcript(bot, chat_id, bot.chats.get(chat_id), include_deleted)

    def chats(self, token: str | None = None) -> list[dict[str, Any]]:
        bot = self.bot(token)
        with self.world.lock:
            result = []
            for chat_id, chat in bot.chats.items():
                user = self.world.users.get(chat_id)
                result.append({"chat_id": chat_id, "user": user.to_api() if user else None,
                               "version": chat.version, "blocked": chat.blocked,
                               "messages": sum(not m.deleted for m in chat.messages.values())})
            return result

    def users(self) -> list[dict[str, Any]]:
        with self.world.lock:
            return [user.to_api() for user in self.world.users.values()]

    def commands(self, token: str | None = None) -> list[dict[str, Any]]:
        bot = self.bot(token)
        with self.world.lock:
            return [{"scope": bot.scopes.get(key, {"type": "default"}), "language_code": lang,
                     "commands": [dict(c) for c in commands]}
                    for (key, lang), commands in bot.commands.items()]

    def bots(self) -> list[dict[str, Any]]:
        with self.world.lock:
            return [{"id": bot.bot_id, "username": bot.username,
                     "pending_updates": len(bot.updates), "polling": bot.active_poll is not None,
                     "webhook_url": bot.webhook.get("url", ""),
                     "allowed_updates": sorted(bot.allowed_updates),
                     "limits": bot.limiter.settings()}
                    for bot in self.world.bots.values()]

    # ------------------------------------------------------------ steering

    def set_limits(
        self,
        global_rate: float | None = None,
        chat_rate: float | None = None,
        chat_burst: float | None = None,
    ) -> dict[str, Any]:
        """Change the flood limits of every bot at run time (0 or less = unlimited)."""
        for bot in self.world.bots.values():
            bot.limiter.configure(
                None if global_rate is None else float(global_rate),
                None if chat_rate is None else float(chat_rate),
                None if chat_burst is None else float(chat_burst),
            )
        return self.world.bots[self.world.tokens[0]].limiter.settings()

    def add_fault(self, mode: str, **options: Any) -> dict[str, Any]:
        try:
            fault = self.world.faults.add(str(mode), **options)
        except (TypeError, ValueError) as exc:
            raise ControlError(400, str(exc)) from None
        return fault.describe()

    def clear_faults(self) -> dict[str, Any]:
        return {"cleared": self.world.faults.clear()}

    def faults(self) -> list[dict[str, Any]]:
        return self.world.faults.describe()

    def stats(self) -> dict[str, Any]:
        return self.world.stats.snapshot()

    def reset_stats(self) -> dict[str, Any]:
        self.world.stats.reset()
        return {"ok": True}

    def sends(self, since: float | None = None, chat_id: int | None = None) -> list[dict]:
        return self.world.stats.sends(since, chat_id)

    def reset(self) -> dict[str, Any]:
        """Forget users, chats, updates, faults and counters; keep tokens and settings."""
        self.world.reset()
        return {"ok": True}


def _query(query_id: str, kind: str, user_id: int, payload: dict[str, Any]) -> QueryRecord:
    return QueryRecord(query_id, kind, user_id, time.time(), payload)


def _require_approved(bot: BotState, query_id: str, user_id: int,
                      terms: dict[str, Any]) -> None:
    """One approved pre-checkout query pays its own invoice once."""
    record = bot.queries.get(query_id)
    if record is None or record.kind != "pre_checkout" or record.user_id != user_id:
        raise ControlError(404, "unknown pre_checkout_query_id")
    if not (record.answered and record.answer and record.answer.get("ok")):
        raise ControlError(409, "the bot did not approve this pre-checkout query")
    if any(record.payload.get(key) != value for key, value in terms.items()):
        raise ControlError(409, "the pre-checkout query was for another invoice")
    if record.payload.get("paid"):
        raise ControlError(409, "this pre-checkout query has already been paid")
    record.payload["paid"] = True


def _button_data(message: StoredMessage | None, button_text: str) -> str:
    keyboard = (message.reply_markup or {}).get("inline_keyboard", []) if message else []
    for row in keyboard:
        for button in row:
            if button.get("text") == button_text and "callback_data" in button:
                return str(button["callback_data"])
    raise ControlError(404, f"no callback button {button_text!r} on that message")


def _transcript(
    bot: BotState, chat_id: int, chat: ChatState | None, include_deleted: bool
) -> dict[str, Any]:
    if chat is None:
        return {"chat_id": chat_id, "version": 0, "blocked": False, "messages": [],
                "callback_answers": [], "pre_checkout_answers": [], "chat_actions": []}
    messages = [m.to_transcript() for m in chat.messages.values()
                if include_deleted or not m.deleted]
    return {
        "chat_id": chat_id,
        "version": chat.version,
        "blocked": chat.blocked,
        "messages": messages,
        "callback_answers": [dict(a) for a in chat.callback_answers],
        "pre_checkout_answers": [dict(a) for a in chat.pre_checkout_answers],
        "chat_actions": list(chat.actions),
    }
