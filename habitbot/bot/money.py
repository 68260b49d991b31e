"""How money and billing dates look in chat: amounts from integer minor units, instants in the
user's own timezone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from habitbot.bot.context import Context

CURRENCY_SIGNS = {"RUB": "₽", "USD": "$"}


def money(amount_minor: int, currency: str) -> str:
    if currency == "XTR":
        return f"{amount_minor} ⭐"
    sign = CURRENCY_SIGNS.get(currency, currency)
    return f"{amount_minor / 100:.2f} {sign}"


def _local(ctx: Context, instant: datetime) -> datetime:
    try:
        return instant.astimezone(ZoneInfo(ctx.user.timezone))
    except ZoneInfoNotFoundError:
        return instant


def local_date(ctx: Context, instant: datetime) -> str:
    return _local(ctx, instant).strftime("%d.%m.%Y")


def local_time(ctx: Context, instant: datetime) -> str:
    return _local(ctx, instant).strftime("%d.%m.%Y %H:%M")
