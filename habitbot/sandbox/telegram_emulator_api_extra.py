"""Bot API methods of the emulator: media, files, commands, invoices, Stars and settings."""

from __future__ import annotations

import json
import posixpath
import re
import time
from typing import Any
from urllib.parse import urlparse

from habitbot.sandbox.telegram_emulator_api import (
    QUERY_TOO_OLD,
    CoreMethods,
    Method,
    Params,
    chat_id_param,
    send_options,
)
from habitbot.sandbox.telegram_emulator_state import (
    BotState,
    FileRecord,
    StoredMessage,
    World,
    make_file,
    new_id,
)
from habitbot.sandbox.telegram_emulator_text import (
    MAX_CAPTION_LENGTH,
    bad_request,
    parse_reply_markup,
)

COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
BOT_DOWNLOAD_LIMIT = 20 << 20  # getFile refuses bigger files, as Telegram does for bots
SCOPE_TYPES = frozenset(
    {"default", "all_private_chats", "all_group_chats", "all_chat_administrators", "chat",
     "chat_administrators", "chat_member"}
)
SETTINGS = {
    "setMyDescription": ("getMyDescription", "description"),
    "setMyShortDescription": ("getMyShortDescription", "short_description"),
    "setMyName": ("getMyName", "name"),
}


class ExtraMethods:
    """sendPhoto/sendDocument/getFile, commands, invoices, Stars refunds and bot settings."""

    def __init__(self, world: World, core: CoreMethods) -> None:
        self.world = world
        self.core = core

    def methods(self) -> dict[str, Method]:
        methods: dict[str, Method] = {
            "sendPhoto": lambda bot, p: self.send_media(bot, p, "photo"),
            "sendDocument": lambda bot, p: self.send_media(bot, p, "document"),
            "getFile": self.get_file,
            "setMyCommands": self.set_my_commands,
            "getMyCommands": self.get_my_commands,
            "deleteMyCommands": self.delete_my_commands,
            "sendInvoice": self.send_invoice,
            "createInvoiceLink": self.create_invoice_link,
            "answerPreCheckoutQuery": self.answer_pre_checkout_query,
            "refundStarPayment": self.refund_star_payment,
            "getStarTransactions": self.get_star_transactions,
            "getChat": self.get_chat,
            "setChatMenuButton": self.set_menu_button,
            "getChatMenuButton": self.get_menu_button,
        }
        for setter, (getter, key) in SETTINGS.items():
            methods[setter] = self._setter(key)
            methods[getter] = self._getter(key)
        return methods

    # ------------------------------------------------------------ media and files

    def send_media(self, bot: BotState, params: Params, kind: str) -> dict[str, Any]:
        chat_id = chat_id_param(params)
        caption = self.core.formatted(params, "caption", MAX_CAPTION_LENGTH)
        markup = parse_reply_markup(params.raw("reply_markup"))
        options = send_options(params)
        record = self.input_file(bot, params, kind)
        if kind == "photo":
            content: dict[str, Any] = {"photo": [photo_size(record)]}
        else:
            content = {"document": record.to_api()}
        hidden = {**options, "file_id": record.file_id, "file_name": record.file_name,
                  "file_size": record.file_size, "file_source": record.source}

        def build(message_id: int, ts: float) -> StoredMessage:
            return StoredMessage(
                message_id, chat_id, "bot", kind, int(ts), ts, text=caption.text,
                entities=caption.entities, raw_text=params.text("caption"),
                parse_mode=params.text("parse_mode"), reply_markup=markup, content=content,
                hidden=hidden,
            )

        method = "sendPhoto" if kind == "photo" else "sendDocument"
        return self.core.deliver(bot, chat_id, method, build, paid=options["paid_broadcast"])

    def input_file(self, bot: BotState, params: Params, kind: str) -> FileRecord:
        """The file of a send: a multipart upload, a known file_id or an HTTP URL."""
        upload = params.file(kind)
        if upload is not None:
            if not upload.data:
                raise bad_request("file must be non-empty")
            filename = upload.filename or ("photo.jpg" if kind == "photo" else "document")
            record = self.new_file(kind, filename, upload.data, upload.content_type)
        else:
            reference = (params.text(kind) or "").strip()
            if not reference:
                raise bad_request(f"there is no {kind} in the request")
            with self.world.lock:
                known = bot.files.get(reference)
            if known is not None:
                return known
            if not reference.lower().startswith(("http://", "https://")):
                raise bad_request("wrong file identifier/HTTP URL specified")
            url_name = posixpath.basename(urlparse(reference).path) or None
            record = self.new_file(kind, url_name, b"", None, source="url")
        with self.world.lock:
            bot.files[record.file_id] = record
        return record

    def new_file(
        self, kind: str, name: str | None, data: bytes, mime: str | None, source: str = "upload"
    ) -> FileRecord:
        return make_file(kind, name, data, mime, self.world.file_store_cap, source)

    def get_file(self, bot: BotState, params: Params) -> dict[str, Any]:
        file_id = (params.text("file_id") or "").strip()
        with self.world.lock:
            record = bot.files.get(file_id)
            if record is None:
                raise bad_request("invalid file_id")
            if (record.file_size or 0) > BOT_DOWNLOAD_LIMIT:
                raise bad_request("file is too big")
            if record.file_path is None:
                extension = posixpath.splitext(record.file_name or "")[1]
                record.file_path = f"{record.kind}s/file_{len(bot.files)}{extension}"
            return {"file_id": record.file_id, "file_unique_id": record.file_unique_id,
                    "file_size": record.file_size, "file_path": record.file_path}

    # ------------------------------------------------------------ commands

    def _scope(self, params: Params) -> tuple[str, dict[str, Any]]:
        scope = params.json("scope", "bot command scope") or {"type": "default"}
        if not isinstance(scope, dict) or scope.get("type") not in SCOPE_TYPES:
            raise bad_request("unsupported bot command scope type")
        return json.dumps(scope, sort_keys=True), scope

    def _language(self, params: Params) -> str:
        code = (params.text("language_code") or "").strip()
        if code and not LANGUAGE_RE.match(code):
            raise bad_request("invalid language code specified")
        return code

    def set_my_commands(self, bot: BotState, params: Params) -> bool:
        commands = params.json("commands", "commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        if len(commands) > 100:
            raise bad_request("BOT_COMMANDS_TOO_MUCH")
        normalized = [_command(item) for item in commands]
        key, scope = self._scope(params)
        language = self._language(params)
        with self.world.lock:
            if normalized:
                bot.commands[(key, language)] = normalized
                bot.scopes[key] = scope
            else:
                bot.commands.pop((key, language), None)
        return True

    def get_my_commands(self, bot: BotState, params: Params) -> list[dict[str, str]]:
        key, _ = self._scope(params)
        language = self._language(params)
        with self.world.lock:
            return [dict(c) for c in bot.commands.get((key, language), [])]

    def delete_my_commands(self, bot: BotState, params: Params) -> bool:
        key, _ = self._scope(params)
        language = self._language(params)
        with self.world.lock:
            bot.commands.pop((key, language), None)
        return True

    # ------------------------------------------------------------ payments

    def send_invoice(self, bot: BotState, params: Params) -> dict[str, Any]:
        chat_id = chat_id_param(params)
        invoice = invoice_fields(params)
        markup = parse_reply_markup(params.raw("reply_markup"))
        options = send_options(params)
        content = {"invoice": {
            "title": invoice["title"],
            "description": invoice["description"],
            "start_parameter": invoice["start_parameter"],
            "currency": invoice["currency"],
            "total_amount": invoice["total_amount"],
        }}
        hidden = {**options, "invoice_payload": invoice["payload"], "prices": invoice["prices"]}

        def build(message_id: int, ts: float) -> StoredMessage:
            return StoredMessage(
                message_id, chat_id, "bot", "invoice", int(ts), ts, text=invoice["title"],
                reply_markup=markup, content=content, hidden=hidden,
            )

        return self.core.deliver(bot, chat_id, "sendInvoice", build,
                                 paid=options["paid_broadcast"])

    def create_invoice_link(self, bot: BotState, params: Params) -> str:
        invoice = invoice_fields(params)
        slug = new_id()
        with self.world.lock:
            bot.settings.setdefault("invoice_links", {})[slug] = invoice
        return f"https://t.me/${slug}"

    def answer_pre_checkout_query(self, bot: BotState, params: Params) -> bool:
        query_id = params.text("pre_checkout_query_id") or ""
        if params.raw("ok") is None:
            raise bad_request('parameter "ok" is required')
        ok = params.flag("ok")
        error_message = params.text("error_message") or ""
        if not ok and not error_message:
            raise bad_request("ERROR_MESSAGE_EMPTY")
        world = self.world
        with world.lock:
            record = bot.queries.get(query_id)
            if (
                record is None
                or record.kind != "pre_checkout"
                or record.answered
                or time.time() - record.created > world.pre_checkout_ttl
            ):
                raise bad_request(QUERY_TOO_OLD)
            answer = {"pre_checkout_query_id": query_id, "ok": ok,
                      "error_message": error_message or None, "answered_at": time.time(),
                      "invoice_payload": record.payload.get("invoice_payload")}
            record.answered, record.answer = True, answer
            chat = bot.chat(record.user_id)
            chat.pre_checkout_answers.append(answer)
            chat.version += 1
            world.notify_chat()
        return True

    def refund_star_payment(self, bot: BotState, params: Params) -> bool:
        user_id = params.integer("user_id")
        charge_id = (params.text("telegram_payment_charge_id") or "").strip()
        if not charge_id:
            raise bad_request("CHARGE_ID_EMPTY")
        with self.world.lock:
            payment = bot.payments.get(charge_id)
            if payment is None or payment["user_id"] != user_id or payment["currency"] != "XTR":
                raise bad_request("CHARGE_NOT_FOUND")
            if payment["refunded"]:
                raise bad_request("CHARGE_ALREADY_REFUNDED")
            payment["refunded"] = True
            payment["refunded_at"] = time.time()
        return True

    def get_star_transactions(self, bot: BotState, params: Params) -> dict[str, Any]:
        """The bot's Stars transactions in chronological order: each payment (incoming, its
        id is the charge id) and each refund (outgoing, the same id)."""
        offset = params.integer("offset", 0) or 0
        limit = params.integer("limit", 100)
        if offset < 0:
            raise bad_request("OFFSET_INVALID")
        if limit is None or not 1 <= limit <= 100:
            raise bad_request("LIMIT_INVALID")
        with self.world.lock:
            entries: list[tuple[float, dict[str, Any]]] = []
            for charge_id, payment in bot.payments.items():
                if payment["currency"] != "XTR":
                    continue
                user = self.world.users.get(payment["user_id"])
                partner = {"type": "user", "transaction_type": "invoice_payment",
                           "user": user.to_api() if user else {"id": payment["user_id"]},
                           "invoice_payload": payment["invoice_payload"]}
                base = {"id": charge_id, "amount": payment["total_amount"]}
                entries.append((payment["paid_at"], {**base, "date": int(payment["paid_at"]),
                                                     "source": partner}))
                if payment["refunded"]:
                    entries.append((payment["refunded_at"], {
                        **base, "date": int(payment["refunded_at"]), "receiver": partner}))
        entries.sort(key=lambda entry: entry[0])
        return {"transactions": [t for _, t in entries[offset:offset + limit]]}

    # ------------------------------------------------------------ chats and settings

    def get_chat(self, bot: BotState, params: Params) -> dict[str, Any]:
        chat_id = chat_id_param(params)
        with self.world.lock:
            user = self.world.users.get(chat_id)
            if user is None:
                raise bad_request("chat not found")
            return {**user.chat(), "accent_color_id": 0, "max_reaction_count": 11}

    def set_menu_button(self, bot: BotState, params: Params) -> bool:
        button = params.json("menu_button", "menu button") or {"type": "default"}
        with self.world.lock:
            bot.settings["menu_button"] = button
        return True

    def get_menu_button(self, bot: BotState, params: Params) -> dict[str, Any]:
        with self.world.lock:
            return dict(bot.settings.get("menu_button", {"type": "default"}))

    def _setter(self, key: str) -> Method:
        def setter(bot: BotState, params: Params) -> bool:
            language = self._language(params)
            with self.world.lock:
                bot.settings[(key, language)] = params.text(key) or ""
            return True

        return setter

    def _getter(self, key: str) -> Method:
        def getter(bot: BotState, params: Params) -> dict[str, str]:
            language = self._language(params)
            with self.world.lock:
                return {key: bot.settings.get((key, language), "")}

        return getter


def photo_size(record: FileRecord) -> dict[str, Any]:
    return {"file_id": record.file_id, "file_unique_id": record.file_unique_id,
            "file_size": record.file_size, "width": 1280, "height": 720}


def _command(item: Any) -> dict[str, str]:
    if not isinstance(item, dict):
        raise bad_request("can't parse BotCommand JSON object")
    command, description = item.get("command"), item.get("description")
    if not isinstance(command, str) or not COMMAND_RE.match(command):
        raise bad_request("BOT_COMMAND_INVALID")
    if not isinstance(description, str) or not 1 <= len(description.strip()) <= 256:
        raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
    return {"command": command, "description": description}


def _prices(params: Params) -> list[dict[str, Any]]:
    prices = params.json("prices", "prices")
    if not isinstance(prices, list) or not prices:
        raise bad_request("can't parse prices JSON object")
    result = []
    for price in prices:
        if not isinstance(price, dict) or not isinstance(price.get("label"), str):
            raise bad_request("can't parse prices JSON object")
        amount = price.get("amount")
        if isinstance(amount, str) and amount.lstrip("-").isdigit():
            amount = int(amount)
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise bad_request("can't parse prices JSON object")
        result.append({"label": price["label"], "amount": amount})
    return result


def invoice_fields(params: Params) -> dict[str, Any]:
    """Validate the invoice parameters shared by sendInvoice and createInvoiceLink."""
    title = params.text("title") or ""
    description = params.text("description") or ""
    payload = params.text("payload") or ""
    currency = (params.text("currency") or "").strip()
    if not 1 <= len(title) <= 32:
        raise bad_request("TITLE_INVALID" if title else "title is empty")
    if not 1 <= len(description) <= 255:
        raise bad_request("DESCRIPTION_INVALID" if description else "description is empty")
    if not 1 <= len(payload.encode("utf-8")) <= 128:
        raise bad_request("INVOICE_PAYLOAD_INVALID")
    if not CURRENCY_RE.match(currency):
        raise bad_request("CURRENCY_INVALID")
    prices = _prices(params)
    if currency == "XTR":
        # Stars: no payment provider, no tips, and exactly one price.
        if (len(prices) != 1 or (params.text("provider_token") or "").strip()
                or params.integer("max_tip_amount", 0)):
            raise bad_request("STARS_INVOICE_INVALID")
    elif not (params.text("provider_token") or "").strip():
        raise bad_request("PAYMENT_PROVIDER_INVALID")
    total = sum(p["amount"] for p in prices)
    if total <= 0:
        raise bad_request("CURRENCY_TOTAL_AMOUNT_INVALID")
    return {"title": title, "description": description, "payload": payload,
            "currency": currency, "prices": prices, "total_amount": total,
            "start_parameter": params.text("start_parameter") or ""}
