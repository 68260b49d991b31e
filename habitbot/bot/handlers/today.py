"""/today: one live card of today's habits with a button row each, edited in place as the user
checks in; and check-ins by free text ("water 3")."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from telebot import types

from habitbot.bot import cards, clock
from habitbot.bot.context import Context, StaleButton, escape
from habitbot.bot.registry import registry
from habitbot.bot.texts import amount, error_text
from habitbot.services import habits as svc
from habitbot.services.habits import NAME_MAX, HabitError, HabitView
from habitbot.services.progress import local_day
from habitbot.services.stats import start_day
from habitbot.telegram.limits import TEXT_LIMIT, visible_length

# A check-in is a habit's name (or its start) and a number: anything longer is not one, and is
# refused before any parsing.
MAX_CHECKIN_TEXT = NAME_MAX + 40


def today_for(ctx: Context) -> date:
    return local_day(clock.now(), ctx.user.timezone, ctx.user.day_start_hour)


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
         day: date, is_today: bool, page: int) -> list[types.InlineKeyboardButton]:
    ordinal = day.toordinal()
    if status is None:
        return [ctx.button(f"✅ {habit.name[:30]}", "ck", habit.id, ordinal, "d", page),
                ctx.button("⏭", "ck", habit.id, ordinal, "s", page)]
    if is_today:  # undo is for the current day only
        return [ctx.button(ctx._("↩️ Undo: {name}", name=habit.name[:30]), "ck", habit.id,
                           ordinal, "u", page)]
    return []


def _line(habit: HabitView, status: tuple[str, Decimal | None] | None) -> str:
    value = ""
    if habit.kind == "measurable" and status and status[1] is not None:
        unit = f" {escape(habit.target_unit)}" if habit.target_unit else ""
        value = f" — {amount(status[1])}/{amount(habit.target_value)}{unit}"
    return f"{_mark(status, habit)} {escape(habit.name)}{value}"


def _due_on(ctx: Context, day: date) -> list[HabitView]:
    """The habits due on the user's `day` that existed by then (in the user's own days)."""
    assert ctx.user.id is not None
    zone, start_hour = ctx.user.timezone, ctx.user.day_start_hour
    return [h for h in svc.list_habits(ctx.runtime.engine, ctx.user.id)
            if _due_today(h, day) and start_day(h, zone, start_hour) <= day]


def render_card(ctx: Context, day: date,
                page: int | str = 0) -> tuple[str, types.InlineKeyboardMarkup | None]:
    assert ctx.user.id is not None
    current = today_for(ctx)
    is_today = day == current
    items = _due_on(ctx, day)
    if not items and is_today:
        return ctx._("Nothing due today. Create a habit with /new."), None
    if not items:  # with the way back: a habit made today was not due yesterday
        markup = types.InlineKeyboardMarkup()
        markup.row(ctx.button(ctx._("Today ▶️"), "tdday", current.toordinal()))
        return ctx._("Nothing was due yesterday."), markup
    done = svc.checkins_for_day(ctx.runtime.engine, ctx.user.id, day)
    title = (ctx._("<b>Today, {date}</b>", date=day.strftime("%d.%m")) if is_today
             else ctx._("<b>Yesterday, {date}</b>", date=day.strftime("%d.%m")))
    lines = [_line(habit, done.get(habit.id)) for habit in items]
    pages = cards.paginate(lines, TEXT_LIMIT - visible_length(title) - 1)
    number = cards.page_number(page, len(pages))
    markup = types.InlineKeyboardMarkup()
    for index in pages[number]:
        row = _row(ctx, items[index], done.get(items[index].id), day, is_today, number)
        if row:
            markup.row(*row)
    pager = cards.pager(ctx, number, len(pages), "tdday", day.toordinal())
    if pager:
        markup.row(*pager)
    markup.row(ctx.button(ctx._("◀️ Yesterday"), "tdday", day.toordinal() - 1) if is_today
               else ctx.button(ctx._("Today ▶️"), "tdday", current.toordinal()))
    return "\n".join([title, *(lines[i] for i in pages[number])]), markup


@registry.callback("tdday")
def switch_day(ctx: Context, ordinal: str, page: str = "0") -> None:
    """Today or yesterday, on a page of the card."""
    if ctx.limited or ctx.user.id is None:
        raise StaleButton("no database")
    day = date.fromordinal(int(ordinal))
    if (today_for(ctx) - day).days not in (0, 1):
        raise StaleButton("only today and yesterday")
    cards.show(ctx, *render_card(ctx, day, page))


@registry.command("today")
def today(ctx: Context, message: types.Message) -> None:
    if ctx.limited or ctx.user.id is None:
        ctx.reply(ctx._("Habits are not available right now."))
        return
    cards.send(ctx, *render_card(ctx, today_for(ctx)))


@registry.callback("ck")
def check(ctx: Context, habit_id: str, ordinal: str, action: str, page: str = "0") -> None:
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
                                  source="today", now=clock.now())
            if not result.created:
                ctx.answer(ctx._("Already checked in."))
        else:
            raise StaleButton(action)
    except HabitError as exc:
        ctx.answer(error_text(ctx, exc), alert=True)
    cards.show(ctx, *render_card(ctx, day, page))


def parse_checkin(text: str) -> tuple[str, Decimal] | None:
    """('water', 3) for 'water 3': the last word a number (3, 2.5 or 2,5), the words before it
    a name. Split on whitespace, not matched by a pattern: linear in the text."""
    words = text.split()
    if len(words) < 2:
        return None
    whole, separator, fraction = words[-1].replace(",", ".").partition(".")
    if not (whole.isascii() and whole.isdigit()):
        return None
    if separator and not (fraction.isascii() and fraction.isdigit()):
        return None
    return " ".join(words[:-1]), Decimal(f"{whole}.{fraction}" if separator else whole)


def text_checkin(ctx: Context, message: types.Message) -> bool:
    """'water 3' checks in 3 for the habit whose name starts with 'water'. True if handled."""
    if ctx.limited or ctx.user.id is None:
        return False
    text = message.text or ""
    if len(text) > MAX_CHECKIN_TEXT:
        ctx.reply(ctx._("That message is too long for me: a check-in is a habit's name and a "
                        "number, for example «water 3». Send /help to see what I can do."))
        return True
    parsed = parse_checkin(text)
    if parsed is None:
        return False
    wanted = parsed[0].casefold()
    candidates = [h for h in svc.list_habits(ctx.runtime.engine, ctx.user.id)
                  if h.is_active and h.name.casefold().startswith(wanted)]
    if len(candidates) != 1:
        return False
    habit = candidates[0]
    day = today_for(ctx)
    try:
        result = svc.check_in(ctx.runtime.engine, ctx.user.id, habit.id, day, "done",
                              parsed[1], source="text", now=clock.now())
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
