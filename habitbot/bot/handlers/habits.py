"""/new (a short guided dialog, or one message: `/new Read 20 pages daily 08:30`) and
/habits (the list; each habit's card: pause, archive, restore, delete, move)."""

from __future__ import annotations

from datetime import time
from decimal import Decimal

from telebot import types

from habitbot.bot import cards
from habitbot.bot.context import Context, StaleButton, escape
from habitbot.bot.parsing import parse_command
from habitbot.bot.registry import registry
from habitbot.bot.texts import WEEKDAYS, error_text, habit_line
from habitbot.models.habits import ALL_WEEKDAYS
from habitbot.services import habits as svc
from habitbot.services import schedules
from habitbot.services.habits import HabitDraft, HabitError
from habitbot.services.quick_habit import parse_quick
from habitbot.telegram.limits import TEXT_LIMIT, visible_length

NAME_STATE = "new:name"
TARGET_STATE = "new:target"
TIME_STATE = "new:time"
CHOOSE_STATE = "new:choose"
RENAME_STATE = "habit:rename"
SCHEDULE_STATE = "habit:schedule"
TARGET_EDIT_STATE = "habit:target"
COMMON_TIMES = ("07:00", "08:00", "09:00", "12:00", "18:00", "20:00", "21:00", "22:00")


def _storage_or_notice(ctx: Context) -> bool:
    if ctx.limited or ctx.user.id is None:
        ctx.reply(ctx._("Habits are not available right now."))
        return False
    return True


def _draft(ctx: Context) -> HabitDraft:
    data = ctx.conversation.data.get("draft")
    if not isinstance(data, dict) or "name" not in data:
        raise StaleButton("no habit being created")
    return HabitDraft(
        name=data["name"], kind=data.get("kind", "boolean"),
        target_value=Decimal(data["target"]) if data.get("target") else None,
        target_unit=data.get("unit"), target_direction=data.get("direction", "at_least"),
        frequency=data.get("frequency", "daily"), weekdays=int(data.get("weekdays", 127)),
        times_per_week=int(data.get("per_week", 7)),
        reminder_times=[time.fromisoformat(t) for t in data.get("times", [])])


def _save(ctx: Context, state: str, draft: HabitDraft) -> None:
    ctx.set_state(state, draft={
        "name": draft.name, "kind": draft.kind,
        "target": str(draft.target_value) if draft.target_value is not None else None,
        "unit": draft.target_unit, "direction": draft.target_direction,
        "frequency": draft.frequency, "weekdays": draft.weekdays,
        "per_week": draft.times_per_week,
        "times": [t.isoformat(timespec="minutes") for t in draft.reminder_times]})


def _create(ctx: Context, draft: HabitDraft) -> None:
    assert ctx.user.id is not None
    try:
        habit = svc.create_habit(ctx.runtime.engine, ctx.user.id, draft)
    except HabitError as exc:
        ctx.clear_state()
        cards.show(ctx, error_text(ctx, exc))
        return
    ctx.clear_state()
    cards.show(ctx, ctx._("New habit: {habit}", habit=habit_line(ctx, habit)) + "\n\n"
               + ctx._("Check in with /today, or from the reminder itself."))


@registry.command("new")
def new(ctx: Context, message: types.Message) -> None:
    if not _storage_or_notice(ctx):
        return
    command = parse_command(message, None)
    args = command[1] if command else ""
    if args:
        try:
            draft = parse_quick(args)
        except HabitError as exc:
            ctx.reply(error_text(ctx, exc))
            return
        except ValueError:
            ctx.reply(ctx._("I could not read that time. Use 24-hour time like 08:30 or "
                            "21:00."))
            return
        _create(ctx, draft)
        return
    ctx.set_state(NAME_STATE)
    ctx.reply(ctx._("What habit do you want to build? Send its name, for example: Read, "
                    "Drink water, Morning run.\n\nTip: next time send everything at once: "
                    "<code>/new Read 20 pages daily 08:30</code>"))


@registry.state(NAME_STATE)
def receive_name(ctx: Context, message: types.Message) -> None:
    try:
        name = svc.clean_name(message.text)
    except HabitError as exc:
        ctx.reply(error_text(ctx, exc) + " " + ctx._("Send the name as text."))
        return
    _save(ctx, CHOOSE_STATE, HabitDraft(name))
    markup = types.InlineKeyboardMarkup()
    markup.row(ctx.button(ctx._("✅ Done / not done"), "newkind", "b"))
    markup.row(ctx.button(ctx._("🔢 With a number (pages, glasses…)"), "newkind", "m"))
    ctx.reply(ctx._("«{name}»: how do you track it?", name=escape(name)), markup)


@registry.state(CHOOSE_STATE)
def expecting_a_tap(ctx: Context, message: types.Message) -> None:
    ctx.reply(ctx._("Tap one of the buttons above, or send /cancel."))


@registry.callback("newkind")
def choose_kind(ctx: Context, kind: str) -> None:
    draft = _draft(ctx)
    if kind == "m":
        draft.kind = "measurable"
        _save(ctx, TARGET_STATE, draft)
        cards.show(ctx, ctx._("What is the daily target? For example: <code>20 pages</code>, "
                              "<code>8 glasses</code>, or <code>max 2 cups</code> for a "
                              "limit."))
        return
    if kind != "b":
        raise StaleButton(kind)
    _ask_frequency(ctx, draft)


@registry.state(TARGET_STATE)
def receive_target(ctx: Context, message: types.Message) -> None:
    draft = _draft(ctx)
    try:
        parsed = parse_quick(f"x {message.text or ''}")
    except (HabitError, ValueError):
        parsed = None
    if parsed is None or parsed.kind != "measurable":
        ctx.reply(ctx._("Send a number with an optional unit, for example 20 pages, or "
                        "max 2 cups."))
        return
    draft.target_value, draft.target_unit = parsed.target_value, parsed.target_unit
    draft.target_direction = parsed.target_direction
    _ask_frequency(ctx, draft, new_message=True)


def _ask_frequency(ctx: Context, draft: HabitDraft, new_message: bool = False) -> None:
    _save(ctx, CHOOSE_STATE, draft)
    markup = types.InlineKeyboardMarkup()
    markup.row(ctx.button(ctx._("Every day"), "newfreq", "d"),
               ctx.button(ctx._("Mon–Fri"), "newfreq", "w"))
    markup.row(*(ctx.button(ctx.t.ngettext("{n}× a week", "{n}× a week", n), "newfreq",
                            "n", n) for n in (2, 3, 4, 5)))
    markup.row(ctx.button(ctx._("Choose days…"), "newdays", 0))
    text = ctx._("How often?")
    if new_message:
        ctx.reply(text, markup)
    else:
        cards.show(ctx, text, markup)


@registry.callback("newfreq")
def choose_frequency(ctx: Context, kind: str, count: str = "7") -> None:
    draft = _draft(ctx)
    if kind == "d":
        draft.frequency, draft.weekdays, draft.times_per_week = "daily", ALL_WEEKDAYS, 7
    elif kind == "w":
        draft.frequency, draft.weekdays, draft.times_per_week = "weekdays", 0b0011111, 5
    elif kind == "n" and 1 <= int(count) <= 6:
        draft.frequency, draft.weekdays, draft.times_per_week = \
            "times_per_week", ALL_WEEKDAYS, int(count)
    else:
        raise StaleButton(kind)
    _ask_time(ctx, draft)


@registry.callback("newdays")
def choose_days(ctx: Context, mask: str, done: str = "") -> None:
    draft = _draft(ctx)
    value = int(mask)
    if not 0 <= value <= ALL_WEEKDAYS:
        raise StaleButton(mask)
    if done:
        if value == 0:
            ctx.answer(ctx._("Choose at least one day."), alert=True)
            return
        draft.frequency = "daily" if value == ALL_WEEKDAYS else "weekdays"
        draft.weekdays, draft.times_per_week = value, bin(value).count("1")
        _ask_time(ctx, draft)
        return
    markup = types.InlineKeyboardMarkup(row_width=7)
    markup.add(*(ctx.button(("✅ " if value & (1 << i) else "") + ctx._(WEEKDAYS[i]),
                            "newdays", value ^ (1 << i)) for i in range(7)))
    markup.row(ctx.button(ctx._("Done"), "newdays", value, 1))
    cards.show(ctx, ctx._("Tap the days, then Done."), markup)


def _ask_time(ctx: Context, draft: HabitDraft) -> None:
    _save(ctx, TIME_STATE, draft)
    markup = types.InlineKeyboardMarkup(row_width=4)
    markup.add(*(ctx.button(t, "newtime", t.replace(":", "")) for t in COMMON_TIMES))
    markup.row(ctx.button(ctx._("No reminder"), "newtime", "-"))
    cards.show(ctx, ctx._("When should I remind you? Tap a time or send your own, like "
                          "07:45."), markup)


@registry.callback("newtime")
def choose_time(ctx: Context, value: str) -> None:
    draft = _draft(ctx)
    if ctx.conversation.state != TIME_STATE:
        raise StaleButton("time step is over")
    if value != "-":
        draft.reminder_times = [schedules.parse_local_time(f"{value[:2]}:{value[2:]}")]
    _create(ctx, draft)


@registry.state(TIME_STATE)
def receive_time(ctx: Context, message: types.Message) -> None:
    draft = _draft(ctx)
    try:
        draft.reminder_times = [schedules.parse_local_time(message.text or "")]
    except ValueError:
        ctx.reply(ctx._("I could not read that time. Use 24-hour time like 08:30 or 21:00."))
        return
    _create(ctx, draft)


# -- /habits -------------------------------------------------------------------------------
def _list(ctx: Context, page: int | str = 0) -> tuple[str, types.InlineKeyboardMarkup | None]:
    assert ctx.user.id is not None
    items = svc.list_habits(ctx.runtime.engine, ctx.user.id, include_archived=True)
    if not items:
        return ctx._("You have no habits yet. Create one with /new."), None
    title = ctx._("<b>Your habits</b>")
    lines = [f"{number}. {habit_line(ctx, habit)}"
             for number, habit in enumerate(items, start=1)]
    pages = cards.paginate(lines, TEXT_LIMIT - visible_length(title) - 1)
    shown = cards.page_number(page, len(pages))
    markup = types.InlineKeyboardMarkup()
    for index in pages[shown]:
        habit = items[index]
        markup.row(ctx.button(f"{index + 1}. {habit.name[:40]}", "hab", habit.id, shown))
    pager = cards.pager(ctx, shown, len(pages), "habs")
    if pager:
        markup.row(*pager)
    return "\n".join([title, *(lines[i] for i in pages[shown])]), markup


@registry.command("habits")
def habits(ctx: Context, message: types.Message) -> None:
    if _storage_or_notice(ctx):
        cards.send(ctx, *_list(ctx))


@registry.callback("habs")
def back_to_list(ctx: Context, page: str = "0") -> None:
    cards.show(ctx, *_list(ctx, page))


def _card(ctx: Context, habit_id: int, page: str = "0") -> None:
    """A habit's card; `page` is the page of the list it was opened from (for « Back)."""
    assert ctx.user.id is not None
    habit = svc.get_habit(ctx.runtime.engine, ctx.user.id, habit_id)
    markup = types.InlineKeyboardMarkup()

    def act(label: str, action: str) -> types.InlineKeyboardButton:
        return ctx.button(label, "habact", habit.id, action, page)

    if habit.archived:
        markup.row(act(ctx._("♻️ Restore"), "restore"), act(ctx._("🗑 Delete"), "delete"))
    else:
        pause = (act(ctx._("⏸ Pause"), "pause") if habit.is_active
                 else act(ctx._("▶️ Resume"), "resume"))
        markup.row(pause, act(ctx._("🗄 Archive"), "archive"))
        markup.row(act(ctx._("✏️ Rename"), "rename"), act(ctx._("⏰ Schedule"), "schedule"))
        if habit.kind == "measurable":
            markup.row(act(ctx._("🎯 Target"), "target"))
        markup.row(act("⬆️", "up"), act("⬇️", "down"))
        markup.row(act(ctx._("🗑 Delete"), "delete"))
    markup.row(ctx.button(ctx._("« Back"), "habs", page))
    cards.show(ctx, habit_line(ctx, habit), markup)


@registry.callback("hab")
def open_card(ctx: Context, habit_id: str, page: str = "0") -> None:
    try:
        _card(ctx, int(habit_id), page)
    except HabitError as exc:
        ctx.answer(error_text(ctx, exc), alert=True)


@registry.callback("habact")
def habit_action(ctx: Context, habit_id: str, action: str, page: str = "0",
                 confirmed: str = "") -> None:
    assert ctx.user.id is not None
    hid, engine, uid = int(habit_id), ctx.runtime.engine, ctx.user.id
    try:
        if action == "delete" and not confirmed:
            markup = types.InlineKeyboardMarkup()
            markup.row(ctx.button(ctx._("Yes, delete it with its history"), "habact", hid,
                                  "delete", page, 1),
                       ctx.button(ctx._("No"), "hab", hid, page))
            habit = svc.get_habit(engine, uid, hid)
            cards.show(ctx, ctx._("Delete «{name}» and all its check-ins? This cannot be "
                                  "undone. (Archiving keeps the history.)",
                                  name=escape(habit.name)), markup)
            return
        if action == "delete":
            svc.delete_habit(engine, uid, hid)
            ctx.answer(ctx._("Deleted."))
            cards.show(ctx, *_list(ctx, page))
            return
        if action == "rename":
            ctx.set_state(RENAME_STATE, habit_id=hid)
            ctx.reply(ctx._("Send the new name."))
            return
        if action == "schedule":
            ctx.set_state(SCHEDULE_STATE, habit_id=hid)
            ctx.reply(ctx._("Send how often and when, for example: <code>daily 08:30</code>, "
                            "<code>mon wed fri 19:00</code>, <code>3 times a week 07:00</code>, "
                            "or <code>daily</code> for no reminder."))
            return
        if action == "target":
            ctx.set_state(TARGET_EDIT_STATE, habit_id=hid)
            ctx.reply(ctx._("Send the new target, for example <code>20 pages</code> or "
                            "<code>max 2 cups</code>."))
            return
        actions = {"pause": svc.pause_habit, "resume": svc.resume_habit,
                   "archive": svc.archive_habit, "restore": svc.restore_habit}
        if action in actions:
            actions[action](engine, uid, hid)
        elif action in ("up", "down"):
            svc.move_habit(engine, uid, hid, -1 if action == "up" else 1)
        else:
            raise StaleButton(action)
        _card(ctx, hid, page)
    except HabitError as exc:
        ctx.answer(error_text(ctx, exc), alert=True)


@registry.state(RENAME_STATE)
def receive_rename(ctx: Context, message: types.Message) -> None:
    assert ctx.user.id is not None
    try:
        habit = svc.rename_habit(ctx.runtime.engine, ctx.user.id,
                                 int(ctx.conversation.data.get("habit_id", 0)),
                                 message.text or "")
    except HabitError as exc:
        ctx.reply(error_text(ctx, exc))
        if exc.code == "not_found":
            ctx.clear_state()
        return
    ctx.clear_state()
    ctx.reply(ctx._("Renamed: {habit}", habit=habit_line(ctx, habit)))


def _editing(ctx: Context) -> int:
    return int(ctx.conversation.data.get("habit_id", 0))


@registry.state(SCHEDULE_STATE)
def receive_schedule(ctx: Context, message: types.Message) -> None:
    assert ctx.user.id is not None
    try:
        parsed = parse_quick(f"x {message.text or ''}")
        if parsed.name != "x" or parsed.kind != "boolean":
            raise HabitError("bad_frequency")
        habit = svc.set_schedule(ctx.runtime.engine, ctx.user.id, _editing(ctx),
                                 parsed.frequency, parsed.weekdays, parsed.times_per_week,
                                 parsed.reminder_times)
    except HabitError as exc:
        ctx.reply(error_text(ctx, exc))
        if exc.code == "not_found":
            ctx.clear_state()
        return
    except ValueError:
        ctx.reply(ctx._("I could not read that time. Use 24-hour time like 08:30 or 21:00."))
        return
    ctx.clear_state()
    ctx.reply(ctx._("Schedule changed: {habit}", habit=habit_line(ctx, habit)))


@registry.state(TARGET_EDIT_STATE)
def receive_target_edit(ctx: Context, message: types.Message) -> None:
    assert ctx.user.id is not None
    try:
        parsed = parse_quick(f"x {message.text or ''}")
        if parsed.kind != "measurable" or parsed.target_value is None:
            raise HabitError("target_not_a_number")
        habit = svc.set_target(ctx.runtime.engine, ctx.user.id, _editing(ctx),
                               parsed.target_value, parsed.target_unit,
                               parsed.target_direction)
    except (HabitError, ValueError) as exc:
        ctx.reply(error_text(ctx, exc) if isinstance(exc, HabitError)
                  else ctx._("Send a number with an optional unit, for example 20 pages, or "
                             "max 2 cups."))
        if isinstance(exc, HabitError) and exc.code == "not_found":
            ctx.clear_state()
        return
    ctx.clear_state()
    ctx.reply(ctx._("Target changed: {habit}", habit=habit_line(ctx, habit)))
