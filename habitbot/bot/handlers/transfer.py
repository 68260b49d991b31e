"""/export (CSV and JSON files) and import: send a HabitBot export or Loop Habit Tracker's
CSV export (ZIP) as a document. Both are handed to a worker (`workers.imports`): an upload is
only checked (size, type) here, and no file is read or built in the bot."""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from telebot import types

from habitbot.bot.context import Context
from habitbot.bot.registry import registry
from habitbot.services import transfer
from workers import imports

log = logging.getLogger(__name__)

_EXTENSIONS = ("csv", "json", "zip", "txt")
_MEDIA = ("image/", "video/", "audio/")


@registry.command("export")
def export(ctx: Context, message: types.Message) -> None:
    if ctx.limited or ctx.user.id is None:
        ctx.reply(ctx._("Export is not available right now."))
        return
    _queue(ctx, ctx._("Export is not available right now."), lambda: imports.enqueue_export(
        ctx.runtime.redis, ctx.user.telegram_id, ctx.user.language))


def _queue(ctx: Context, unavailable: str, enqueue: Callable[[], str]) -> None:
    """Hand the file's work to a worker and tell the user what became of it."""
    try:
        answer = enqueue()
    except redis.RedisError as exc:
        log.warning("file job not queued", extra={"user_id": ctx.user.telegram_id,
                                                  "error": type(exc).__name__})
        ctx.reply(unavailable)
        return
    ctx.reply(ctx._(answer))


def _importable(document: types.Document) -> bool:
    """Worth a download: a name we read (or none) and no media type."""
    name = (document.file_name or "").lower()
    extension = name.rsplit(".", 1)[1] if "." in name else ""
    mime = (document.mime_type or "").lower()
    return (not extension or extension in _EXTENSIONS) and not mime.startswith(_MEDIA)


def receive_document(ctx: Context, message: types.Message) -> None:
    document = message.document
    assert document is not None
    if ctx.limited or ctx.user.id is None:
        ctx.reply(ctx._("Import is not available right now."))
        return
    if (document.file_size or 0) > transfer.MAX_FILE_BYTES:
        ctx.reply(imports.refusal_text(ctx.t, "too_large", transfer.MAX_FILE_BYTES // transfer.MB))
        return
    if not _importable(document):
        ctx.reply(ctx._(imports.UNREADABLE))
        return
    upload = imports.Upload(ctx.user.telegram_id, ctx.user.language, document.file_id,
                            document.file_unique_id, document.file_name or "file")
    _queue(ctx, ctx._("Import is not available right now."),
           lambda: imports.enqueue(ctx.runtime.redis, upload))
