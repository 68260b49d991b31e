"""Choosing a timezone three ways — shared location, city name, UTC offset (or an IANA name) —
with a confirmation that shows the local time. Used by onboarding ("onb") and settings ("set").
"""

from __future__ import annotations

from collections.abc import Callable

from telebot import types

from habitbot.bot import cards, clock
from habitbot.bot.context import Context, StaleButton, escape
from habitbot.bot.registry import registry
from habitbot.services import timezones
from habitbot.services.users import set_timezone

ASK_STATE = "tz:ask"
CONFIRM_STATE = "tz:confirm"
FLOWS = ("onb", "set")
MAX_QUERY = 80
# What happens after the zone is saved, per flow (registered by onboarding and settings).
FINISHERS: dict[str, Callable[[Context], None]] = {}


def ask(ctx: Context, flow: str) -> None:
    ctx.set_state(ASK_STATE, flow=flow)
    keyboard = types.ReplyKeyboardMarkup(resize_keyboard=True, one_time_keyboard=True)
    keyboard.add(types.KeyboardButton(ctx._("📍 Send my location"), request_location=True))
    ctx.bot.send_message(ctx.chat_id, ctx._(
        "Where are you? Send your location, or type your city (for example, Moscow), or "
        "your UTC offset (for example, +3)."), reply_markup=keyboard)


def confirm(ctx: Context, flow: str, zone: str) -> None:
    ctx.set_state(CONFIRM_STATE, flow=flow, zone=zone)
    now = timezones.local_now(zone, clock.now())
    markup = types.InlineKeyboardMarkup()
    markup.row(ctx.button(ctx._("✅ Yes"), "tzok", flow, zone),
               ctx.button(ctx._("✏️ Change"), "tzre", flow))
    text = ctx._("Timezone: {zone} ({offset}). Your local time is {time}. Is that right?",
                 zone=zone, offset=timezones.format_offset(zone), time=now.strftime("%H:%M"))
    cards.show(ctx, text, markup)


def _choices(ctx: Context, flow: str, intro: str,
             choices: list[timezones.ZoneChoice]) -> None:
    markup = types.InlineKeyboardMarkup()
    for choice in choices:
        markup.row(ctx.button(choice.label[:60], "tzpick", flow, choice.zone))
    ctx.reply(intro, markup)


@registry.state(ASK_STATE)
def receive(ctx: Context, message: types.Message) -> None:
    flow = ctx.conversation.data.get("flow", "set")
    if message.location is not None:
        zone = timezones.zone_from_location(message.location.latitude,
                                            message.location.longitude)
        if zone is None:
            ctx.reply(ctx._("I could not find a timezone for that place. Type your city or "
                            "your UTC offset (for example, +3)."))
            return
        confirm(ctx, flow, zone)
        return
    text = (message.text or "").strip()
    if not text or len(text) > MAX_QUERY:
        ctx.reply(ctx._("Please send your location, a city name or a UTC offset like +3."))
        return
    zone = timezones.canonical_zone(text)
    if zone:
        confirm(ctx, flow, zone)
        return
    offset = timezones.parse_offset(text)
    if offset is not None:
        found = timezones.zones_for_offset(offset)
        if not found:
            ctx.reply(ctx._("No timezone has that offset right now. Try your city instead."))
            return
        _choices(ctx, flow, ctx._("Which of these is yours? Choosing a real zone keeps "
                                  "reminders right when clocks change."), found)
        return
    cities = timezones.find_city(text)
    if not cities:
        ctx.reply(ctx._("I do not know «{query}». Try a bigger city nearby, or your UTC "
                        "offset (for example, +3).", query=escape(text)))
        return
    if len(cities) == 1:
        confirm(ctx, flow, cities[0].zone)
        return
    _choices(ctx, flow, ctx.t.ngettext("I found {n} place with that name:",
                                       "I found {n} places with that name:", len(cities)),
             cities)


def _flow(flow: str) -> str:
    if flow not in FLOWS:
        raise StaleButton(flow)
    return flow


@registry.callback("tzpick")
def pick(ctx: Context, flow: str, zone: str) -> None:
    if ctx.conversation.state not in (ASK_STATE, CONFIRM_STATE) or \
            not timezones.is_valid_zone(zone):
        raise StaleButton("timezone step is over")
    confirm(ctx, _flow(flow), zone)


@registry.callback("tzre")
def again(ctx: Context, flow: str) -> None:
    if ctx.conversation.state != CONFIRM_STATE:
        raise StaleButton("timezone step is over")
    cards.show(ctx, ctx._("Let's try again."))
    ask(ctx, _flow(flow))


@registry.callback("tzok")
def accept(ctx: Context, flow: str, zone: str) -> None:
    conversation = ctx.conversation
    if conversation.state != CONFIRM_STATE or conversation.data.get("zone") != zone:
        raise StaleButton("timezone step is over")
    flow = _flow(flow)
    if ctx.limited:
        ctx.answer(ctx._("Some features are temporarily unavailable. Your data is safe; "
                         "please try again a little later."), alert=True)
        return
    ctx.use(set_timezone(ctx.runtime.engine, ctx.user.telegram_id, zone,
                         complete_onboarding=(flow == "onb")))
    ctx.clear_state()
    cards.show(ctx, ctx._("Timezone saved: {zone}.", zone=zone))
    FINISHERS[flow](ctx)
