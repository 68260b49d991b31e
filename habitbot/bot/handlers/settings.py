"""/settings: language, timezone, notifications, the hour a day starts — one message edited
in place."""

from __future__ import annotations

from datetime import timedelta

from telebot import types

from habitbot.bot import cards, clock
from habitbot.bot.context import Context, StaleButton
from habitbot.bot.handlers import timezone
from habitbot.bot.handlers.onboarding import LANGUAGE_NAMES
from habitbot.bot.handlers.today import today_for
from habitbot.bot.registry import registry
from habitbot.bot.texts import WEEKDAYS
from habitbot.i18n import LANGUAGES
from habitbot.services import timezones
from habitbot.services.stats import current_rest, end_rest, start_rest
from habitbot.services.users import (
    set_day_start_hour,
    set_language,
    set_notifications,
    set_weekly_summary,
)


def _menu(ctx: Context) -> tuple[str, types.InlineKeyboardMarkup]:
    user = ctx.user
    local = timezones.local_now(user.timezone, clock.now()).strftime("%H:%M")
    text = "\n".join([
        ctx._("<b>Settings</b>"),
        ctx._("Language: {language}", language=LANGUAGE_NAMES[user.language]),
        ctx._("Timezone: {zone} ({offset}), local time {time}", zone=user.timezone,
              offset=timezones.format_offset(user.timezone), time=local),
        ctx._("Reminders: on") if user.notifications_enabled else ctx._("Reminders: off"),
        ctx._("The day starts at {hour:02d}:00 (check-ins before that count for the "
              "previous day)", hour=user.day_start_hour),
        (ctx._("Weekly summary: {weekday} evening", weekday=ctx._(WEEKDAYS[
            user.summary_weekday])) if user.summary_weekday is not None
         else ctx._("Weekly summary: off")),
    ])
    if user.id is not None:
        rest = current_rest(ctx.runtime.engine, user.id, today_for(ctx))
        if rest:
            text += "\n" + ctx._("🏖 Rest: {start} – {end} (no reminders, streaks kept)",
                                 start=rest[0].strftime("%d.%m"), end=rest[1].strftime("%d.%m"))
    markup = types.InlineKeyboardMarkup()
    markup.row(ctx.button(ctx._("🌐 Language"), "setlang"),
               ctx.button(ctx._("🕒 Timezone"), "settz"))
    toggle = (ctx._("🔕 Turn reminders off") if user.notifications_enabled
              else ctx._("🔔 Turn reminders on"))
    markup.row(ctx.button(toggle, "setnotif", 0 if user.notifications_enabled else 1))
    markup.row(ctx.button(ctx._("🌅 Day start"), "setday"),
               ctx.button(ctx._("🏖 Rest"), "setrest"))
    markup.row(ctx.button(ctx._("📊 Weekly summary"), "setsum"))
    return text, markup


def send_menu(ctx: Context) -> None:
    cards.send(ctx, *_menu(ctx))


def _require_storage(ctx: Context) -> None:
    if ctx.limited:
        raise StaleButton("no database")


REST_CHOICES = ("3", "7", "14")

timezone.FINISHERS["set"] = send_menu


@registry.command("settings")
def settings(ctx: Context, message: types.Message) -> None:
    if ctx.limited:
        ctx.reply(ctx._("Settings are not available right now."))
        return
    send_menu(ctx)


@registry.callback("setmenu")
def back(ctx: Context) -> None:
    _require_storage(ctx)
    cards.show(ctx, *_menu(ctx))


@registry.callback("setlang")
def language_menu(ctx: Context, chosen: str | None = None) -> None:
    _require_storage(ctx)
    if chosen is not None:
        if chosen not in LANGUAGES:
            raise StaleButton(chosen)
        ctx.use(set_language(ctx.runtime.engine, ctx.user.telegram_id, chosen))
        cards.show(ctx, *_menu(ctx))
        return
    markup = types.InlineKeyboardMarkup()
    markup.row(*(ctx.button(LANGUAGE_NAMES[c], "setlang", c) for c in LANGUAGES))
    markup.row(ctx.button(ctx._("« Back"), "setmenu"))
    cards.show(ctx, ctx._("Choose your language:"), markup)


@registry.callback("settz")
def timezone_change(ctx: Context) -> None:
    _require_storage(ctx)
    cards.show(ctx, ctx._("Changing the timezone."))
    timezone.ask(ctx, "set")


@registry.callback("setnotif")
def notifications(ctx: Context, enabled: str) -> None:
    _require_storage(ctx)
    if enabled not in ("0", "1"):
        raise StaleButton(enabled)
    ctx.use(set_notifications(ctx.runtime.engine, ctx.user.telegram_id, enabled == "1"))
    ctx.answer(ctx._("Reminders on") if enabled == "1" else ctx._("Reminders off"))
    cards.show(ctx, *_menu(ctx))


@registry.callback("setday")
def day_start(ctx: Context, hour: str | None = None) -> None:
    _require_storage(ctx)
    if hour is not None:
        value = int(hour)
        ctx.use(set_day_start_hour(ctx.runtime.engine, ctx.user.telegram_id, value))
        cards.show(ctx, *_menu(ctx))
        return
    markup = types.InlineKeyboardMarkup(row_width=6)
    markup.add(*(ctx.button(f"{h:02d}", "setday", h) for h in range(0, 12)))
    markup.row(ctx.button(ctx._("« Back"), "setmenu"))
    cards.show(ctx, ctx._("When does your day start? Check-ins before this hour count for the "
                          "previous day."), markup)


@registry.callback("setrest")
def rest(ctx: Context, days: str | None = None) -> None:
    _require_storage(ctx)
    assert ctx.user.id is not None
    today = today_for(ctx)
    if days is not None:
        if days == "0":
            end_rest(ctx.runtime.engine, ctx.user.id, today)
            ctx.answer(ctx._("Rest is over. Welcome back!"))
        elif days in REST_CHOICES:
            start_rest(ctx.runtime.engine, ctx.user.id, today,
                       today + timedelta(days=int(days) - 1))
            ctx.answer(ctx._("Enjoy your rest! Your streaks are kept."))
        else:
            raise StaleButton(days)
        cards.show(ctx, *_menu(ctx))
        return
    markup = types.InlineKeyboardMarkup()
    markup.row(*(ctx.button(ctx.t.ngettext("{n} day", "{n} days", int(n)), "setrest", n)
                 for n in REST_CHOICES))
    markup.row(ctx.button(ctx._("End the rest now"), "setrest", 0))
    markup.row(ctx.button(ctx._("« Back"), "setmenu"))
    cards.show(ctx, ctx._("Rest mode: no reminders, and your streaks stay as they are. For how "
                          "long?"), markup)


@registry.callback("setsum")
def weekly_summary(ctx: Context, choice: str | None = None) -> None:
    _require_storage(ctx)
    if choice is not None:
        weekday = None if choice == "off" else int(choice)
        ctx.use(set_weekly_summary(ctx.runtime.engine, ctx.user.telegram_id, weekday))
        cards.show(ctx, *_menu(ctx))
        return
    markup = types.InlineKeyboardMarkup(row_width=7)
    markup.add(*(ctx.button(ctx._(WEEKDAYS[d]), "setsum", d) for d in range(7)))
    markup.row(ctx.button(ctx._("Off"), "setsum", "off"))
    markup.row(ctx.button(ctx._("« Back"), "setmenu"))
    cards.show(ctx, ctx._("On which evening should I send your weekly summary?"), markup)
