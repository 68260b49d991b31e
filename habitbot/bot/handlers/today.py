"""/today: one live card of today's habits with a button row each, edited in place as the user
checks in; and check-ins by free text ("water 3")."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal

from telebot import types

from habitbot.bot.context import Context, StaleButton, escape
from habitbot.bot.registry import registry
from habitbot.bot.texts import amount, error_text
from habitbot.services import habits as svc
from habitbot.services.habits import HabitError, HabitView
from habitbot.services.progress import local_day

_TEXT_CHECKIN = re.compile(r"^(?P<name>.+?)\s+(?P<value>\d+(?:[.,]\d+)?)\s*$")


def today_for(ctx: Context) -> date:
    return local_day(datetime.now(UTC), ctx.user.timezone, ctx.user.day_start_hour)


def _due_today(habit: HabitView, day: date) -> bool:
    if habit.archived or not habit.is_active:
        return False
    if habit.frequency == "weekdays":
        return bool(habit.weekdays & (1 << day.weekday()))
    return True


def _mark(status: tuple[str, Decimal | None] | None, habit: HabitView) -> str:
    if status is None:
        return "⬜"
    if status[0] == "skipped":
        return "⏭"
    if habit.kind == "measurable" and status[1] is not None and habit.target_value:
        met = (status[1] >= habit.target_value if habit.target_direction == "at_least"
               else status[1] <= habit.target_value)
        return "✅" if met else "🟨"
    return "✅"


def _row(ctx: Context, habit: HabitView, status: tuple[str, Decimal | None] | None,
         day: date, is_today: bool) -> list[types.InlineKeyboardButton]:
    ordinal = day.toordinal()
    if status is None:
        return [ctx.button(f"✅ {habit.name[:30]}", "ck", habit.id, ordinal, "d"),
                ctx.button("⏭", "ck", habit.id, ordinal, "s")]
    if is_today:  # undo is for the current day only
        return [ctx.button(ctx._("↩️ Undo: {name}", name=habit.name[:30]), "ck", habit.id,
                           ordinal, "u")]
    return []


def render_card(ctx: Context, day: date) -> tuple[str, types.InlineKeyboardMarkup | None]:
    assert ctx.user.id is not None
    current = today_for(ctx)
    is_today = day == current
    items = [h for h in svc.list_habits(ctx.runtime.engine, ctx.user.id)
             if _due_today(h, day) and (is_today or h.created_at.date() <= day)]
    markup = types.InlineKeyboardMarkup()
    switch = (ctx.button(ctx._("◀️ Yesterday"), "tdday", day.toordinal() - 1) if is_today
              else ctx.button(ctx._("Today ▶️"), "tdday", current.toordinal()))
    if not items:
        return ctx._("Nothing due today. Create a habit with /new."), None
    done = svc.checkins_for_day(ctx.runtime.engine, ctx.user.id, day)
    title = (ctx._("<b>Today, {date}</b>", date=day.strftime("%d.%m")) if is_today
             else ctx._("<b>Yesterday, {date}</b>", date=day.strftime("%d.%m")))
    lines = [title]
    for habit in items:
        status = done.get(habit.id)
        value = ""
        if habit.kind == "measurable" and status and status[1] is not None:
            unit = f" {escape(habit.target_unit)}" if habit.target_unit else ""
            value = f" — {amount(status[1])}/{amount(habit.target_value)}{unit}"
        lines.append(f"{_mark(status, habit)} {escape(habit.name)}{value}")
        row = _row(ctx, habit, status, day, is_today)
        if row:
            markup.row(*row)
    markup.row(switch)
    return "\n".join(lines), markup


@registry.callback("tdday")
def switch_day(ctx: Context, ordinal: str) -> None:
    if ctx.limited or ctx.user.id is None:
        raise StaleButton("no database")
    day = date.fromordinal(int(ordinal))
    if (today_for(ctx) - day).days not in (0, 1):
        raise StaleButton("only today and yesterday")
    ctx.show(*render_card(ctx, day))


@registry.command("today")
def today(ctx: Context, message: types.Message) -> None:
    if ctx.limited or ctx.user.id is None:
        ctx.reply(ctx._("Habits are not available right now."))
        return
    ctx.reply(*render_card(ctx, today_for(ctx)))


@registry.callback("ck")
def check(ctx: Context, habit_id: str, ordinal: str, action: str) -> None:
    if ctx.limited or ctx.user.id is None:
        raise StaleButton("no database")
    day = date.fromordinal(int(ordinal))
    current = today_for(ctx)
    if (current - day).days not in (0, 1):
        raise StaleButton("too old to change")
    engine, uid, hid = ctx.runtime.engine, ctx.user.id, int(habit_id)
    try:
        if action == "u":
            if day != current:
                raise StaleButton("undo is for today only")
            svc.undo_check_in(engine, uid, hid, day)
            ctx.answer(ctx._("Undone."))
        elif action in ("d", "s"):
            result = svc.check_in(engine, uid, hid, day, "done" if action == "d" else "skipped",
                                  source="today")
            if not result.created:
                ctx.answer(ctx._("Already checked in."))
        else:
            raise StaleButton(action)
    except HabitError as exc:
        ctx.answer(error_text(ctx, exc), alert=True)
    ctx.show(*render_card(ctx, day))


def text_checkin(ctx: Context, message: types.Message) -> bool:
    """'water 3' checks in 3 for the habit whose name starts with 'water'. True if handled."""
    if ctx.limited or ctx.user.id is None:
        return False
    match = _TEXT_CHECKIN.match((message.text or "").strip())
    if not match:
        return False
    wanted = match.group("name").casefold()
    candidates = [h for h in svc.list_habits(ctx.runtime.engine, ctx.user.id)
                  if h.is_active and h.name.casefold().startswith(wanted)]
    if len(candidates) != 1:
        return False
    habit = candidates[0]
    value = Decimal(match.group("value").replace(",", "."))
    day = today_for(ctx)
    try:
        result = svc.check_in(ctx.runtime.engine, ctx.user.id, habit.id, day, "done", value,
                              source="text")
    except HabitError as exc:
        ctx.reply(error_text(ctx, exc))
        return True
    if result.created:
        ctx.reply(ctx._("Noted: {name} — {value}", name=escape(habit.name),
                        value=amount(result.value)))
    else:
        ctx.reply(ctx._("{name} is already checked in today ({value}). Undo it in /today "
                        "to change it.", name=escape(habit.name), value=amount(result.value)))
    return True
