"""/start, /help, /cancel, the commands answered by later sections, unknown input."""

from __future__ import annotations

from telebot import types

from habitbot.bot.context import Context, escape
from habitbot.bot.handlers import onboarding, today, transfer
from habitbot.bot.registry import registry
from habitbot.i18n import N_

COMMANDS = ("start", "help", "new", "habits", "today", "stats", "settings", "premium",
            "balance", "export", "cancel")
DESCRIPTIONS = {
    "start": N_("Start"), "help": N_("Help"), "new": N_("New habit"),
    "habits": N_("My habits"), "today": N_("Today"), "stats": N_("Statistics"),
    "settings": N_("Settings"), "premium": N_("Premium"), "balance": N_("Balance"),
    "export": N_("Export and import"), "cancel": N_("Cancel"),
}


def command_menu(translate) -> list[dict[str, str]]:
    return [{"command": c, "description": translate(DESCRIPTIONS[c])} for c in COMMANDS]


def help_text(ctx: Context) -> str:
    return ctx._(
        "Commands:\n/new — a new habit\n/habits — your habits\n/today — today's check-ins\n"
        "/stats — statistics\n/settings — language, timezone, notifications\n"
        "/premium — premium\n/balance — balance\n/export — export your data (send a file "
        "back to import)\n/cancel — cancel the current action")


@registry.command("start")
def start(ctx: Context, message: types.Message) -> None:
    if not ctx.limited and not ctx.user.onboarded:
        onboarding.begin(ctx)
        return
    ctx.reply(ctx._("Hi, {name}! I am HabitBot: I help you build habits with reminders at the "
                    "right time, streaks and statistics.", name=escape(ctx.first_name)))


@registry.command("help")
def help_(ctx: Context, message: types.Message) -> None:
    ctx.reply(help_text(ctx))


@registry.command("cancel")
def cancel(ctx: Context, message: types.Message) -> None:
    # The dispatcher has already forgotten the dialog.
    ctx.reply(ctx._("Cancelled. Send /help to see what I can do."),
              types.ReplyKeyboardRemove())


@registry.command("_unknown")
def unknown_command(ctx: Context, message: types.Message) -> None:
    ctx.reply(ctx._("I do not know that command. Send /help to see what I can do."))


@registry.command("_text")
def free_text(ctx: Context, message: types.Message) -> None:
    if message.document is not None:
        transfer.receive_document(ctx, message)
        return
    if today.text_checkin(ctx, message):
        return
    ctx.reply(ctx._("I did not understand that. Send /help to see what I can do."))
