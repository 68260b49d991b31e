"""Check-in from the reminder itself: the buttons edit the reminder into
"✅ 08:12 · streak 14" (or "⏭ skipped"). The time is the check-in's own, from the database in
the user's zone, so pressing again later shows the same card and edits nothing."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from habitbot.bot import cards, clock
from habitbot.bot.context import Context, StaleButton, escape
from habitbot.bot.handlers.stats import streak_text
from habitbot.bot.handlers.today import today_for
from habitbot.bot.registry import registry
from habitbot.bot.texts import error_text
from habitbot.services import habits as svc
from habitbot.services.habits import HabitError
from habitbot.services.stats import user_stats


@registry.callback("rm")
def reminder_checkin(ctx: Context, habit_id: str, ordinal: str, action: str) -> None:
    if ctx.limited or ctx.user.id is None:
        raise StaleButton("no database")
    if action not in ("d", "s"):
        raise StaleButton(action)
    day = date.fromordinal(int(ordinal))
    if (today_for(ctx) - day).days not in (0, 1):
        raise StaleButton("too old to change")
    try:
        result = svc.check_in(ctx.runtime.engine, ctx.user.id, int(habit_id), day,
                              "done" if action == "d" else "skipped", source="reminder",
                              now=clock.now())
    except HabitError as exc:
        ctx.answer(error_text(ctx, exc), alert=True)
        cards.show(ctx, error_text(ctx, exc))
        return
    if not result.created:
        ctx.answer(ctx._("Already checked in."))
    name = escape(result.habit.name)
    if result.status == "skipped":
        cards.show(ctx, ctx._("⏭ {name} · skipped", name=name))
        return
    checked = result.checked_at.astimezone(ZoneInfo(ctx.user.timezone)).strftime("%H:%M")
    stats = [s for s in user_stats(ctx.runtime.engine, ctx.user.id, today_for(ctx))
             if s.habit.id == result.habit.id]
    streak = ""
    if stats:
        summary = stats[0].summary
        streak = " · " + ctx._("streak {streak}", streak=streak_text(
            ctx, summary.current_streak, summary.streak_unit))
    cards.show(ctx, ctx._("✅ {time} · {name}", time=checked, name=name) + streak)
