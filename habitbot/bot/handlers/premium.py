"""/premium (status, the trial, buying from the balance) and /balance (amount and history)."""

from __future__ import annotations

from telebot import types

from habitbot.bot.context import Context, StaleButton
from habitbot.bot.registry import registry
from habitbot.i18n import N_
from habitbot.services import billing
from habitbot.services.billing import BillingError

CURRENCY_SIGNS = {"RUB": "₽", "USD": "$", "XTR": "⭐"}
KINDS = {"topup": N_("top-up"), "purchase": N_("purchase"), "refund": N_("refund"),
         "adjustment": N_("adjustment")}


def money(amount_minor: int, currency: str) -> str:
    if currency == "XTR":
        return f"{amount_minor} ⭐"
    sign = CURRENCY_SIGNS.get(currency, currency)
    return f"{amount_minor / 100:.2f} {sign}"


def _screen(ctx: Context) -> tuple[str, types.InlineKeyboardMarkup]:
    assert ctx.user.id is not None
    state = billing.status(ctx.runtime.engine, ctx.user.id)
    if state.tier == "premium" and state.ends_at:
        lines = [ctx._("⭐ Premium until {date}.", date=state.ends_at.strftime("%d.%m.%Y"))]
    elif state.tier == "trial" and state.ends_at:
        lines = [ctx._("🎁 Premium trial until {date}.", date=state.ends_at.strftime(
            "%d.%m.%Y"))]
    else:
        lines = [ctx._("Free plan: up to 3 active habits, one reminder each.")]
    lines.append(ctx._("Premium: unlimited habits and several reminders per habit."))
    lines.append(ctx._("Price: {month} a month, {year} a year.",
                       month=money(billing.price("month", "RUB"), "RUB"),
                       year=money(billing.price("year", "RUB"), "RUB")))
    lines.append(ctx._("Your balance: {amount}", amount=money(
        billing.balance(ctx.runtime.engine, ctx.user.id), "RUB")))
    markup = types.InlineKeyboardMarkup()
    if state.trial_available:
        markup.row(ctx.button(ctx._("🎁 Start the 7-day trial"), "trial"))
    markup.row(ctx.button(ctx._("1 month from the balance"), "buybal", "month"),
               ctx.button(ctx._("1 year from the balance"), "buybal", "year"))
    return "\n".join(lines), markup


@registry.command("premium")
def premium(ctx: Context, message: types.Message) -> None:
    if ctx.limited or ctx.user.id is None:
        ctx.reply(ctx._("Premium is not available right now."))
        return
    ctx.reply(*_screen(ctx))


@registry.callback("trial")
def trial(ctx: Context) -> None:
    if ctx.limited or ctx.user.id is None:
        raise StaleButton("no database")
    try:
        ends = billing.start_trial(ctx.runtime.engine, ctx.user.id)
    except BillingError:
        ctx.answer(ctx._("The trial can be used once."), alert=True)
    else:
        ctx.answer(ctx._("Premium trial until {date}. Enjoy!", date=ends.strftime("%d.%m.%Y")))
    ctx.show(*_screen(ctx))


@registry.callback("buybal")
def buy_from_balance(ctx: Context, plan: str) -> None:
    if ctx.limited or ctx.user.id is None or plan not in billing.PLAN_DAYS:
        raise StaleButton(plan)
    try:
        until = billing.buy_with_balance(ctx.runtime.engine, ctx.user.id, plan)
    except BillingError as exc:
        if exc.code != "insufficient_balance":
            raise
        ctx.answer(ctx._("Not enough on the balance: {missing} more is needed.",
                         missing=money(int(str(exc.params["missing"])), "RUB")), alert=True)
        return
    ctx.answer(ctx._("Premium until {date}. Thank you!", date=until.strftime("%d.%m.%Y")))
    ctx.show(*_screen(ctx))


@registry.command("balance")
def balance(ctx: Context, message: types.Message) -> None:
    if ctx.limited or ctx.user.id is None:
        ctx.reply(ctx._("The balance is not available right now."))
        return
    amount = billing.balance(ctx.runtime.engine, ctx.user.id)
    lines = [ctx._("Balance: {amount}", amount=money(amount, "RUB"))]
    rows = billing.history(ctx.runtime.engine, ctx.user.id)
    if rows:
        lines.append(ctx._("Recent operations:"))
    for tx in rows:
        sign = "+" if tx.amount_minor > 0 else "−"
        lines.append(f"{tx.created_at:%d.%m.%Y} {sign}{money(abs(tx.amount_minor), tx.currency)}"
                     f" · {ctx._(KINDS.get(tx.kind, tx.kind))} → "
                     f"{money(tx.balance_after_minor, tx.currency)}")
    ctx.reply("\n".join(lines))
