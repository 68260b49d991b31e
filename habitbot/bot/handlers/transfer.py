"""/export (CSV and JSON files) and import: send a HabitBot export or Loop Habit Tracker's
CSV export (ZIP) as a document."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from telebot import types

from habitbot.bot.context import Context
from habitbot.bot.handlers.today import today_for
from habitbot.bot.registry import registry
from habitbot.i18n import N_
from habitbot.services import transfer
from habitbot.telegram.errors import TelegramError

log = logging.getLogger(__name__)

REFUSALS = {
    "too_large": N_("The file is too large: at most 5 MB."),
    "send_loop_zip": N_("Send the whole ZIP file that Loop Habit Tracker exports, not a single "
                        "file from it."),
    "too_many_habits": N_("The file has too many habits (at most 200)."),
    "too_many_rows": N_("The file has too many check-ins (at most 100,000)."),
}
UNREADABLE = N_("I cannot read this file. Send a HabitBot export (CSV or JSON) or the CSV "
                "export of Loop Habit Tracker (a ZIP file).")


@registry.command("export")
def export(ctx: Context, message: types.Message) -> None:
    if ctx.limited or ctx.user.id is None:
        ctx.reply(ctx._("Export is not available right now."))
        return
    data = transfer.export_user(ctx.runtime.engine, ctx.user.id)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    ctx.bot.send_document(ctx.chat_id, (f"habitbot-{stamp}.csv", transfer.to_csv(data)))
    ctx.bot.send_document(ctx.chat_id, (f"habitbot-{stamp}.json", transfer.to_json(data)),
                          caption=ctx._("Your habits and check-ins. Send the JSON file back to "
                                        "me (to this or another account) to import it."))


def receive_document(ctx: Context, message: types.Message) -> None:
    document = message.document
    assert document is not None
    if ctx.limited or ctx.user.id is None:
        ctx.reply(ctx._("Import is not available right now."))
        return
    if (document.file_size or 0) > transfer.MAX_FILE_BYTES:
        ctx.reply(ctx._(REFUSALS["too_large"]))
        return
    try:
        info = ctx.bot.get_file(document.file_id)
        data = ctx.runtime.telegram.download_file(info.file_path or "",
                                                  transfer.MAX_FILE_BYTES)
    except ValueError:
        ctx.reply(ctx._(REFUSALS["too_large"]))
        return
    except TelegramError:
        ctx.reply(ctx._("I could not download the file. Please send it again."))
        return
    try:
        summary = transfer.import_file(ctx.runtime.engine, ctx.user.id,
                                       document.file_name or "file", data)
    except transfer.TransferError as exc:
        log.info("import refused", extra={"user_id": ctx.user.telegram_id, "code": exc.code})
        ctx.reply(ctx._(REFUSALS.get(exc.code, UNREADABLE)))
        return
    lines = [ctx._("Import done."),
             ctx.t.ngettext("{n} habit created", "{n} habits created", summary.habits_created),
             ctx.t.ngettext("{n} habit matched an existing one",
                            "{n} habits matched existing ones", summary.habits_matched),
             ctx.t.ngettext("{n} check-in imported", "{n} check-ins imported",
                            summary.checkins_imported)]
    if summary.checkins_skipped_existing:
        lines.append(ctx.t.ngettext("{n} check-in was already there",
                                    "{n} check-ins were already there",
                                    summary.checkins_skipped_existing))
    if summary.rows_ignored:
        lines.append(ctx.t.ngettext("{n} row could not be used", "{n} rows could not be used",
                                    summary.rows_ignored))
    if "archived_over_free_limit" in summary.warnings:
        lines.append(ctx._("Habits over the free plan's limit were archived with their "
                           "history: see /habits."))
    lines.append(ctx._("See /stats for your numbers (today is {date}).",
                       date=today_for(ctx).strftime("%d.%m.%Y")))
    ctx.reply("\n".join(lines))
