"""/stats: streaks, strength and completion per habit, with a calendar heatmap per habit."""

from __future__ import annotations

from datetime import timedelta

from telebot import types

from habitbot.bot import cards
from habitbot.bot.context import Context, StaleButton, escape
from habitbot.bot.handlers.today import today_for
from habitbot.bot.heatmap_labels import render
from habitbot.bot.registry import registry
from habitbot.services import progress
from habitbot.services.stats import HabitStats, user_stats
from habitbot.telegram.limits import TEXT_LIMIT

STATS_PAGE_SIZE = 5


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{round(value * 100)}%"


def streak_text(ctx: Context, length: int, unit: str) -> str:
    if unit == "weeks":
        return ctx.t.ngettext("{n} week", "{n} weeks", length)
    return ctx.t.ngettext("{n} day", "{n} days", length)


def habit_block(ctx: Context, item: HabitStats) -> str:
    s = item.summary
    lines = [f"<b>{escape(item.habit.name)}</b>",
             ctx._("🔥 Streak: {current} (best: {best})",
                   current=streak_text(ctx, s.current_streak, s.streak_unit),
                   best=streak_text(ctx, s.best_streak, s.streak_unit)),
             ctx._("💪 Strength: {percent}%", percent=progress.strength_percent(s.strength)),
             ctx._("📈 Done: {week} in 7 days · {month} in 30 · {year} in 365",
                   week=_percent(s.completion_7), month=_percent(s.completion_30),
                   year=_percent(s.completion_365))]
    if item.habit.frequency == "times_per_week":
        lines.append(ctx._("This week: {done} of {target}", done=s.week_done,
                           target=s.week_target))
    return "\n".join(lines)


def _page(ctx: Context, page: int | str = 0) -> tuple[str, types.InlineKeyboardMarkup | None]:
    assert ctx.user.id is not None
    items = user_stats(ctx.runtime.engine, ctx.user.id, today_for(ctx))
    if not items:
        return ctx._("No habits yet: create one with /new."), None
    blocks = [habit_block(ctx, item) for item in items]
    pages = cards.paginate(blocks, TEXT_LIMIT, per_page=STATS_PAGE_SIZE, separator=2)
    shown = cards.page_number(page, len(pages))
    markup = types.InlineKeyboardMarkup()
    for index in pages[shown]:
        habit = items[index].habit
        markup.row(ctx.button(ctx._("🗓 Calendar: {name}", name=habit.name[:30]), "heat",
                              habit.id))
    pager = cards.pager(ctx, shown, len(pages), "stpage")
    if pager:
        markup.row(*pager)
    return "\n\n".join(blocks[i] for i in pages[shown]), markup


@registry.command("stats")
def stats(ctx: Context, message: types.Message) -> None:
    if ctx.limited or ctx.user.id is None:
        ctx.reply(ctx._("Statistics are not available right now."))
        return
    cards.send(ctx, *_page(ctx))


@registry.callback("stpage")
def stats_page(ctx: Context, page: str) -> None:
    if ctx.limited or ctx.user.id is None:
        raise StaleButton("no database")
    cards.show(ctx, *_page(ctx, page))


@registry.callback("heat")
def heatmap(ctx: Context, habit_id: str) -> None:
    if ctx.limited or ctx.user.id is None:
        raise StaleButton("no database")
    today = today_for(ctx)
    items = [i for i in user_stats(ctx.runtime.engine, ctx.user.id, today,
                                   include_archived=True) if i.habit.id == int(habit_id)]
    if not items:
        ctx.answer(ctx._("That habit does not exist any more."), alert=True)
        return
    item = items[0]
    start = max(item.spec.start, today - timedelta(days=364))
    days = progress.calendar(item.spec, item.checkins, item.rest, today, start, today)
    png = render(ctx, days, start, today, item.habit.name)
    ctx.bot.send_photo(ctx.chat_id, ("calendar.png", png), caption=habit_block(ctx, item),
                       parse_mode="HTML")
