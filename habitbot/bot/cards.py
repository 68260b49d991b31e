"""Cards: bot messages that are re-rendered in place when one of their buttons is pressed.

A card is edited only when what it shows would change. The text and keyboard last written to
each message are remembered (a digest in Redis for a week), so a press that changes nothing
sends no edit at all; Telegram refuses such an edit anyway ("message is not modified"). Without
Redis the card is simply edited.

Long lists are cut into pages by count and by rendered length, so every page stays within
Telegram's limits (`habitbot.telegram.limits`) whatever the number of habits and their names;
the ◀ 2/5 ▶ row carries the page, so a card re-rendered after a press stays on its page.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import redis
from telebot import types

from habitbot.bot.context import Context
from habitbot.redis_client import KEY_PREFIX
from habitbot.telegram.limits import visible_length

log = logging.getLogger(__name__)

PAGE_SIZE = 10
REMEMBER_SECONDS = 7 * 24 * 3600


def _key(chat_id: int, message_id: int) -> str:
    return f"{KEY_PREFIX}card:{chat_id}:{message_id}"


def _fingerprint(text: str, markup: types.InlineKeyboardMarkup | None) -> str:
    keyboard = markup.to_json() if markup is not None else ""
    return hashlib.sha256(f"{text}\x00{keyboard}".encode()).hexdigest()[:32]


def _remembered(ctx: Context, message_id: int) -> str | None:
    try:
        value = ctx.runtime.redis.get(_key(ctx.chat_id, message_id))
    except redis.RedisError as exc:
        log.info("card digest unavailable", extra={"user_id": ctx.user.telegram_id,
                                                   "error": type(exc).__name__})
        return None
    return value.decode() if isinstance(value, bytes) else value


def _remember(ctx: Context, message_id: int, fingerprint: str) -> None:
    try:
        ctx.runtime.redis.set(_key(ctx.chat_id, message_id), fingerprint, ex=REMEMBER_SECONDS)
    except redis.RedisError as exc:
        log.info("card digest not stored", extra={"user_id": ctx.user.telegram_id,
                                                  "error": type(exc).__name__})


def send(ctx: Context, text: str, markup: types.InlineKeyboardMarkup | None = None) -> None:
    """A new card message."""
    sent = ctx.reply(text, markup)
    message_id = getattr(sent, "message_id", None)
    if isinstance(message_id, int) and not ctx.limited:
        _remember(ctx, message_id, _fingerprint(text, markup))


def show(ctx: Context, text: str, markup: types.InlineKeyboardMarkup | None = None) -> None:
    """The card in the message whose button was pressed, edited only if it would change; a new
    message when the update was not a press."""
    if ctx.message_id is None:
        send(ctx, text, markup)
        return
    fingerprint = _fingerprint(text, markup)
    if _remembered(ctx, ctx.message_id) == fingerprint:
        return
    ctx.show(text, markup)
    _remember(ctx, ctx.message_id, fingerprint)


# -- pages -----------------------------------------------------------------------------------
def paginate(blocks: Sequence[str], budget: int, per_page: int = PAGE_SIZE,
             separator: int = 1) -> list[range]:
    """Consecutive blocks per page: at most `per_page` of them and at most `budget` visible
    characters (each block plus its `separator`). At least one page; no empty page but the
    only one of an empty list."""
    pages: list[range] = []
    start = used = 0
    for index, block in enumerate(blocks):
        size = visible_length(block) + separator
        if index > start and (index - start >= per_page or used + size > budget):
            pages.append(range(start, index))
            start, used = index, 0
        used += size
    pages.append(range(start, len(blocks)))
    return pages


def page_number(raw: str | int, count: int) -> int:
    """A page number from a button, kept within the pages there are now."""
    return max(0, min(int(raw), count - 1))


def pager(ctx: Context, page: int, count: int, action: str,
          *args: object) -> list[types.InlineKeyboardButton]:
    """The ◀ 2/5 ▶ row (nothing for a single page); each button carries `*args, page`."""
    if count <= 1:
        return []
    row = []
    if page > 0:
        row.append(ctx.button("◀️", action, *args, page - 1))
    row.append(ctx.button(f"{page + 1}/{count}", action, *args, page))
    if page < count - 1:
        row.append(ctx.button("▶️", action, *args, page + 1))
    return row
