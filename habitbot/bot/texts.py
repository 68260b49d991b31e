"""Rendering of habits for chat messages: every label goes through the translator."""

from __future__ import annotations

from decimal import Decimal

from habitbot.bot.context import Context, escape
from habitbot.i18n import N_
from habitbot.services.habits import HabitError, HabitView

WEEKDAYS = (N_("Mon"), N_("Tue"), N_("Wed"), N_("Thu"), N_("Fri"), N_("Sat"), N_("Sun"))

ERRORS = {
    "name_empty": N_("The name cannot be empty."),
    "name_too_long": N_("The name is too long: at most {limit} characters."),
    "unit_too_long": N_("The unit is too long: at most {limit} characters."),
    "target_not_a_number": N_("The target must be a number, for example 20 or 2.5."),
    "target_not_positive": N_("The target must be greater than zero."),
    "target_out_of_range": N_("That target is out of range."),
    "weekdays_empty": N_("Choose at least one day."),
    "times_per_week_range": N_("Times per week must be from 1 to 7."),
    "too_many_reminders": N_("At most {limit} reminders per habit."),
    "several_reminders_premium": N_("Several reminders per habit are a premium feature: "
                                    "try /premium."),
    "free_limit": N_("The free plan has up to {limit} active habits. Archive one, or try "
                     "premium with /premium."),
    "too_many_habits": N_("You have {limit} habits, the most I keep for one person. Delete "
                          "some first: /habits."),
    "not_found": N_("That habit does not exist any more."),
    "archived": N_("That habit is archived. Restore it first."),
    "bad_time": N_("I could not read that time. Use 24-hour time like 08:30 or 21:00."),
    "value_out_of_range": N_("That value is out of range."),
    "text_too_long": N_("That is too long for me: at most {limit} characters."),
    "bad_frequency": N_("I could not read that schedule. For example: daily 08:30, "
                        "mon wed fri 19:00, 3 times a week 07:00."),
}


def error_text(ctx: Context, error: HabitError) -> str:
    message = ERRORS.get(error.code)
    if message is None:
        return ctx._("That did not work. Please try again.")
    return ctx._(message, **error.params)


def amount(value: Decimal | None) -> str:
    if value is None:
        return ""
    text = format(value.normalize(), "f")
    return text


def frequency_label(ctx: Context, habit: HabitView) -> str:
    if habit.frequency == "daily":
        return ctx._("every day")
    if habit.frequency == "times_per_week":
        return ctx.t.ngettext("{n} time a week", "{n} times a week", habit.times_per_week)
    days = [ctx._(WEEKDAYS[i]) for i in range(7) if habit.weekdays & (1 << i)]
    return ", ".join(days)


def target_label(ctx: Context, habit: HabitView) -> str:
    if habit.kind != "measurable":
        return ""
    unit = f" {escape(habit.target_unit)}" if habit.target_unit else ""
    if habit.target_direction == "at_most":
        return ctx._("at most {amount}{unit}", amount=amount(habit.target_value), unit=unit)
    return ctx._("at least {amount}{unit}", amount=amount(habit.target_value), unit=unit)


def reminders_label(ctx: Context, habit: HabitView) -> str:
    if not habit.reminder_times:
        return ctx._("no reminder")
    return ", ".join(t.strftime("%H:%M") for t in habit.reminder_times)


def habit_line(ctx: Context, habit: HabitView) -> str:
    parts = [f"<b>{escape(habit.name)}</b>"]
    target = target_label(ctx, habit)
    if target:
        parts.append(target)
    parts.append(frequency_label(ctx, habit))
    parts.append("⏰ " + reminders_label(ctx, habit))
    line = " · ".join(parts)
    if habit.archived:
        line = "🗄 " + line
    elif not habit.is_active:
        line = "⏸ " + line
    return line
