"""The emulated Telegram world: users, bots, chats, messages, queries, payments and files.

All of it is guarded by :attr:`World.lock`. Two conditions on that lock wake waiters:
:attr:`World.queued` when updates are queued (getUpdates long polls wait on it) and
:attr:`World.changed` when a chat changes (transcript long polls wait on it).
"""

from __future__ import annotations

import mimetypes
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from habitbot.sandbox.telegram_emulator_limits import FaultBook, SendLimiter, Stats
from habitbot.sandbox.telegram_emulator_text import ApiError, bad_request, inline_markup

DEFAULT_ALLOWED_UPDATES = frozenset(
    {"message", "edited_message", "channel_post", "edited_channel_post", "inline_query",
     "chosen_inline_result", "callback_query", "shipping_query", "pre_checkout_query", "poll",
     "poll_answer", "my_chat_member", "chat_join_request", "business_connection",
     "business_message", "edited_business_message", "deleted_business_messages",
     "purchased_paid_media", "message_reaction", "message_reaction_count", "chat_member",
     "chat_boost", "removed_chat_boost"}
    - {"chat_member", "message_reaction", "message_reaction_count"}
)
ALL_UPDATE_TYPES = DEFAULT_ALLOWED_UPDATES | {"chat_member", "message_reaction",
                                              "message_reaction_count"}
ACTIONS_KEPT = 200


def new_id(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(12).replace("-", "A").replace("_", "B")


@dataclass
class UserInfo:
    user_id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    language_code: str | None = None

    def to_api(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.user_id, "is_bot": False, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            value = getattr(self, key)
            if value:
                user[key] = value
        return user

    def chat(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.user_id, "first_name": self.first_name}
        if self.last_name:
            chat["last_name"] = self.last_name
        if self.username:
            chat["username"] = self.username
        chat["type"] = "private"
        return chat


@dataclass
class StoredMessage:
    """A message of a chat as both sides see it now (edits applied)."""

    message_id: int
    chat_id: int
    sender: str  # "bot" | "user"
    kind: str
    date: int
    sent_at: float
    text: str | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    raw_text: str | None = None
    parse_mode: str | None = None
    reply_markup: dict[str, Any] | None = None
    content: dict[str, Any] = field(default_factory=dict)
    hidden: dict[str, Any] = field(default_factory=dict)
    edited: bool = False
    edit_date: int | None = None
    deleted: bool = False

    def to_api(self, bot: BotState, user: UserInfo) -> dict[str, Any]:
        sender = bot.user_api() if self.sender == "bot" else user.to_api()
        message: dict[str, Any] = {
            "message_id": self.message_id,
            "from": sender,
            "chat": user.chat(),
            "date": self.date,
        }
        if self.edit_date is not None:
            message["edit_date"] = self.edit_date
        message.update(self.content)
        text_key = "text" if self.kind == "text" else "caption"
        if self.text is not None and (self.kind == "text" or self.text):
            message[text_key] = self.text
            if self.entities:
                message["entities" if text_key == "text" else "caption_entities"] = self.entities
        markup = inline_markup(self.reply_markup)
        if markup:
            message["reply_markup"] = markup
        return message

    def to_transcript(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "message_id": self.message_id,
            "from": self.sender,
            "kind": self.kind,
            "text": self.text,
            "entities": self.entities,
            "raw_text": self.raw_text,
            "parse_mode": self.parse_mode,
            "reply_markup": self.reply_markup,
            "edited": self.edited,
            "deleted": self.deleted,
            "date": self.date,
            "sent_at": self.sent_at,
        }
        item.update({k: v for k, v in self.content.items() if k not in ("text", "caption")})
        item.update(self.hidden)
        return item


@dataclass
class ChatState:
    """One private chat between a bot and a user."""

    chat_id: int
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    next_message_id: int = 1
    blocked: bool = False
    deactivated: bool = False
    version: int = 0
    callback_answers: list[dict[str, Any]] = field(default_factory=list)
    pre_checkout_answers: list[dict[str, Any]] = field(default_factory=list)
    actions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=ACTIONS_KEPT))

    def allocate_id(self) -> int:
        message_id = self.next_message_id
        self.next_message_id += 1
        return message_id


@dataclass
class QueryRecord:
    """A callback query or pre-checkout query waiting for the bot's answer."""

    query_id: str
    kind: str
    user_id: int
    created: float
    payload: dict[str, Any]
    answered: bool = False
    answer: dict[str, Any] | None = None


@dataclass
class FileRecord:
    file_id: str
    file_unique_id: str
    kind: str
    file_size: int
    file_name: str | None = None
    mime_type: str | None = None
    source: str = "upload"
    content: bytes | None = None
    file_path: str | None = None

    def to_api(self) -> dict[str, Any]:
        result: dict[str, Any] = {"file_id": self.file_id, "file_unique_id": self.file_unique_id}
        if self.kind == "document":
            if self.file_name:
                result["file_name"] = self.file_name
            if self.mime_type:
                result["mime_type"] = self.mime_type
        result["file_size"] = self.file_size
        return result


def make_file(
    kind: str,
    name: str | None,
    data: bytes,
    mime: str | None,
    store_cap: int,
    source: str = "upload",
) -> FileRecord:
    """A new stored file; its bytes are kept only up to ``store_cap``."""
    if not mime and name:
        mime = mimetypes.guess_type(name)[0]
    return FileRecord(
        file_id=new_id("AgAC" if kind == "photo" else "BQAC"),
        file_unique_id=new_id("AQAD")[:16],
        kind=kind,
        file_size=len(data),
        file_name=name,
        mime_type=mime or ("image/jpeg" if kind == "photo" else None),
        source=source,
        content=data if len(data) <= store_cap else None,
    )


class BotState:
    """Everything Telegram keeps for one bot token."""

    def __init__(self, token: str, username: str, limiter: SendLimiter) -> None:
        self.token = token
        self.bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 1
        self.username = username
        self.first_name = "HabitBot Sandbox"
        self.limiter = limiter
        self.reset()

    def reset(self) -> None:
        self.updates: deque[tuple[int, str, dict[str, Any]]] = deque()
        self.next_update_id = 100_000_001
        self.allowed_updates = DEFAULT_ALLOWED_UPDATES
        self.poll_serial = 0
        self.active_poll: int | None = None
        self.aborted_polls: dict[int, str] = {}
        self.next_conflict_at = 0.0
        self.webhook: dict[str, Any] = {}
        self.chats: dict[int, ChatState] = {}
        self.queries: dict[str, QueryRecord] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self.commands: dict[tuple[str, str], list[dict[str, str]]] = {}
        self.scopes: dict[str, dict[str, Any]] = {}
        self.files: dict[str, FileRecord] = {}
        self.settings: dict[Any, Any] = {}

    def user_api(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": self.first_name,
                "username": self.username}

    def me(self) -> dict[str, Any]:
        return {
            **self.user_api(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def chat(self, chat_id: int) -> ChatState:
        chat = self.chats.get(chat_id)
        if chat is None:
            chat = self.chats[chat_id] = ChatState(chat_id)
        return chat

    def queue_update(self, kind: str, payload: dict[str, Any]) -> int | None:
        """Append an update unless the bot's allowed_updates filter drops it (caller locks)."""
        if kind not in self.allowed_updates:
            return None
        update_id = self.next_update_id
        self.next_update_id += 1
        self.updates.append((update_id, kind, payload))
        return update_id

    def confirm(self, offset: int) -> None:
        """Forget updates before ``offset``; a negative offset counts from the end."""
        if offset < 0:
            offset += self.next_update_id
        elif offset > self.next_update_id:
            return
        while self.updates and self.updates[0][0] < offset:
            self.updates.popleft()

    def pending(self, limit: int) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        for update_id, kind, payload in self.updates:
            if len(batch) >= limit:
                break
            batch.append({"update_id": update_id, kind: payload})
        return batch


class World:
    """Shared state of the emulator and its settings."""

    def __init__(
        self,
        tokens: tuple[str, ...],
        bot_username: str,
        global_rate: float,
        chat_rate: float,
        chat_burst: float,
        auto_create_chats: bool = True,
        callback_ttl: float = 15.0,
        pre_checkout_ttl: float = 10.0,
        strict_html_entities: bool = False,
        conflict_delay: float = 3.0,
        fault_hold_max: float = 60.0,
        file_store_cap: int = 1 << 20,
    ) -> None:
        if not tokens:
            raise ValueError("at least one bot token is required")
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.queued = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.tokens = tuple(tokens)
        self.bots = {
            token: BotState(
                token,
                bot_username if i == 0 else f"{bot_username}_{i + 1}",
                SendLimiter(global_rate, chat_rate, chat_burst),
            )
            for i, token in enumerate(self.tokens)
        }
        self.users: dict[int, UserInfo] = {}
        self.auto_create_chats = auto_create_chats
        self.callback_ttl = callback_ttl
        self.pre_checkout_ttl = pre_checkout_ttl
        self.strict_html_entities = strict_html_entities
        self.conflict_delay = conflict_delay
        self.fault_hold_max = fault_hold_max
        self.file_store_cap = file_store_cap
        self.faults = FaultBook()
        self.stats = Stats()

    def bot(self, token: str | None) -> BotState:
        bot = self.bots.get(token or self.tokens[0])
        if bot is None:
            raise KeyError("unknown bot token")
        return bot

    def notify(self) -> None:
        """Wake getUpdates long polls and transcript waiters (caller holds the lock)."""
        self.queued.notify_all()
        self.changed.notify_all()

    def notify_chat(self) -> None:
        """Wake transcript waiters only: a chat changed, no update was queued."""
        self.changed.notify_all()

    def register_user(
        self,
        user_id: int,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        last_name: str | None = None,
    ) -> UserInfo:
        """Create or update a user (caller holds the lock)."""
        user = self.users.get(user_id)
        if user is None:
            user = self.users[user_id] = UserInfo(user_id, first_name or f"User {user_id}")
        elif first_name:
            user.first_name = first_name
        if username is not None:
            user.username = username or None
        if language_code is not None:
            user.language_code = language_code or None
        if last_name is not None:
            user.last_name = last_name or None
        return user

    def resolve_chat(self, bot: BotState, chat_id: int) -> tuple[UserInfo, ChatState]:
        """The private chat a bot addresses, with Telegram's errors (caller holds the lock)."""
        user = self.users.get(chat_id)
        if user is None:
            if not (self.auto_create_chats and chat_id > 0):
                raise bad_request("chat not found")
            user = self.register_user(chat_id)
        chat = bot.chat(chat_id)
        if chat.deactivated:
            raise ApiError(403, "Forbidden: user is deactivated")
        if chat.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return user, chat

    def add_message(self, chat: ChatState, message: StoredMessage) -> None:
        """Store a message and mark the chat changed (caller holds the lock)."""
        chat.messages[message.message_id] = message
        chat.version += 1
        self.notify_chat()

    def reset(self) -> None:
        with self.lock:
            self.users.clear()
            for bot in self.bots.values():
                bot.reset()
                bot.limiter.reset()
            self.notify()
        self.faults.clear()
        self.stats.reset()


def now_date() -> int:
    return int(time.time())
