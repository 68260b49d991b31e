"""/balance: the internal balance and its last operations, dated in the user's timezone."""

from __future__ import annotations

from telebot import types

from habitbot.bot.context import Context
from habitbot.bot.money import local_date, money
from habitbot.bot.registry import registry
from habitbot.i18n import N_
from habitbot.services import billing

CURRENCY = "RUB"
HISTORY_LENGTH = 10
KINDS = {"topup": N_("top-up"), "purchase": N_("purchase"), "refund": N_("refund"),
         "adjustment": N_("adjustment")}


def balance_text(ctx: Context, user_id: int) -> str:
    amount = billing.balance(ctx.runtime.engine, user_id, CURRENCY)
    lines = [ctx._("Balance: {amount}", amount=money(amount, CURRENCY))]
    rows = billing.history(ctx.runtime.engine, user_id, HISTORY_LENGTH)
    if not rows:
        lines.append(ctx._("No operations yet."))
        return "\n".join(lines)
    lines.append(ctx._("Recent operations:"))
    for tx in rows:
        sign = "+" if tx.amount_minor > 0 else "−"
        kind = ctx._(KINDS[tx.kind]) if tx.kind in KINDS else tx.kind
        lines.append(f"{local_date(ctx, tx.created_at)} {sign}"
                     f"{money(abs(tx.amount_minor), tx.currency)} · {kind} → "
                     f"{money(tx.balance_after_minor, tx.currency)}")
    return "\n".join(lines)


@registry.command("balance")
def balance(ctx: Context, message: types.Message) -> None:
    if ctx.limited or ctx.user.id is None:
        ctx.reply(ctx._("The balance is not available right now."))
        return
    markup = types.InlineKeyboardMarkup()
    markup.row(ctx.button(ctx._("💳 Top up the balance"), "topup"),
               ctx.button(ctx._("⭐ Premium"), "prem"))
    ctx.reply(balance_text(ctx, ctx.user.id), markup)
