"""/premium: status, the trial, prices and the ways to pay — one message edited in place.

Buying a plan: from the balance, by bank card (YooKassa), with CryptoBot or in Telegram Stars
(an invoice in the chat, see `handlers.stars`). Topping up the balance: an amount, then
YooKassa or CryptoBot. An outside payment shows a "Pay" link and a "Check payment" button;
the provider's notification credits it even if the user never comes back.

Every button that starts a payment carries a nonce of the screen it was shown on: pressing it
twice (or a double tap Telegram delivers twice) starts one payment, not two.

With 54-FZ receipts on (`YOOKASSA_RECEIPTS`), a YooKassa payment needs the payer's e-mail: a
user without one is asked for it first (one message, `EMAIL_STATE`), and the payment they were
heading to starts once it is saved, under the same nonce. /premium shows the address to its
owner, with a button to change it.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

import redis
from telebot import types

from habitbot.bot import cards
from habitbot.bot.context import Context, StaleButton, escape
from habitbot.bot.money import local_time, money
from habitbot.bot.registry import registry
from habitbot.i18n import N_
from habitbot.payments import receipts, stars
from habitbot.payments import service as payments
from habitbot.redis_client import KEY_PREFIX
from habitbot.services import billing
from habitbot.services.billing import BillingError
from habitbot.services.habits import MAX_HABITS
from habitbot.telegram.errors import TelegramError

log = logging.getLogger(__name__)

CURRENCY = "RUB"
OUTSIDE_PROVIDERS = ("yookassa", "cryptobot")
PLAN_METHODS = ("balance", *OUTSIDE_PROVIDERS, "stars")
# Any whole-rouble top-up within the payment service's bounds is accepted from a button (the
# "exactly what is missing" one included); the amounts offered come from TOPUP_AMOUNTS.
PRESS_TTL = 24 * 3600
EMAIL_STATE = "premium:email"

PLAN_NAMES = {"month": N_("1 month"), "year": N_("1 year")}
PROVIDER_NAMES = {"yookassa": N_("YooKassa"), "cryptobot": N_("CryptoBot")}
START_ERRORS = {
    "provider_unavailable": N_("{provider} is not answering right now. Nothing was charged: "
                               "please try again in a minute."),
    "provider_not_configured": N_("Paying with {provider} is not available yet. Please "
                                  "choose another way."),
    "provider_error": N_("{provider} did not accept the payment. Nothing was charged: "
                         "please try again later or choose another way."),
}


# -- screens -------------------------------------------------------------------------------

def _user_id(ctx: Context) -> int:
    if ctx.limited or ctx.user.id is None:
        raise StaleButton("no database")
    return ctx.user.id


def _nonce() -> str:
    return secrets.token_hex(3)


def _status_line(ctx: Context, state: billing.PremiumStatus) -> str:
    if state.tier == "premium" and state.ends_at:
        return ctx._("⭐ Premium until {date}.", date=local_time(ctx, state.ends_at))
    if state.tier == "trial" and state.ends_at:
        return ctx._("🎁 Premium trial until {date}.", date=local_time(ctx, state.ends_at))
    return ctx._("Free plan: up to 3 active habits, one reminder each.")


def _price(ctx: Context, plan: str) -> str:
    return ctx._("{plan}: {price} or {stars}", plan=ctx._(PLAN_NAMES[plan]),
                 price=money(billing.price(plan, CURRENCY), CURRENCY),
                 stars=money(billing.price(plan, "XTR"), "XTR"))


def main_screen(ctx: Context, notice: str | None = None
                ) -> tuple[str, types.InlineKeyboardMarkup]:
    user_id = _user_id(ctx)
    state = billing.status(ctx.runtime.engine, user_id)
    lines = [notice, ""] if notice else []
    lines += [_status_line(ctx, state),
              ctx._("Premium: up to {limit} habits and several reminders per habit.",
                    limit=MAX_HABITS),
              _price(ctx, "month"), _price(ctx, "year"),
              ctx._("Your balance: {amount}", amount=money(
                  billing.balance(ctx.runtime.engine, user_id, CURRENCY), CURRENCY))]
    receipts_on = ctx.runtime.settings.yookassa_receipts
    if receipts_on:
        lines.append(_email_line(ctx, user_id))
    markup = types.InlineKeyboardMarkup()
    if state.trial_available:
        days = billing.TRIAL_DAYS
        markup.row(ctx.button(ctx.t.ngettext("🎁 Start the {n}-day trial",
                                             "🎁 Start the {n}-day trial", days),
                              "trial"))
    markup.row(ctx.button(ctx._("⭐ Buy 1 month"), "plan", "month"),
               ctx.button(ctx._("⭐ Buy 1 year"), "plan", "year"))
    markup.row(ctx.button(ctx._("💳 Top up the balance"), "topup"))
    if receipts_on:
        markup.row(ctx.button(ctx._("✉️ E-mail for receipts"), "rcpmail"))
    return "\n".join(lines), markup


def _email_line(ctx: Context, user_id: int) -> str:
    email = receipts.stored_email(ctx.runtime.engine, user_id)
    if email is None:
        return ctx._("E-mail for receipts: not set.")
    return ctx._("Receipts are sent to {email}.", email=escape(email))


def _back(ctx: Context) -> types.InlineKeyboardButton:
    return ctx.button(ctx._("« Back"), "prem")


def _period_lines(ctx: Context, user_id: int, plan: str) -> list[str]:
    """What paying now would give, said before paying: the new end, and that the days the
    user already has (the trial or paid ones) are kept — the paid period follows them."""
    now = datetime.now(UTC)
    starts, ends = billing.next_period(ctx.runtime.engine, user_id, plan, now)
    lines = [ctx._("After paying, premium lasts until {date}.", date=local_time(ctx, ends))]
    if starts > now:
        lines.append(ctx._("The days you already have are kept: the paid period starts on "
                           "{date}.", date=local_time(ctx, starts)))
    return lines


def _plan_screen(ctx: Context, plan: str) -> tuple[str, types.InlineKeyboardMarkup]:
    user_id = _user_id(ctx)
    cost = billing.price(plan, CURRENCY)
    text = "\n".join([
        ctx._("Premium for {plan}: {price} or {stars}.", plan=ctx._(PLAN_NAMES[plan]),
              price=money(cost, CURRENCY), stars=money(billing.price(plan, "XTR"), "XTR")),
        *_period_lines(ctx, user_id, plan),
        ctx._("Your balance: {amount}", amount=money(
            billing.balance(ctx.runtime.engine, user_id, CURRENCY), CURRENCY)),
        ctx._("How would you like to pay?"),
    ])
    nonce = _nonce()
    markup = types.InlineKeyboardMarkup()
    markup.row(ctx.button(ctx._("From the balance ({price})", price=money(cost, CURRENCY)),
                          "pay", plan, "balance", nonce))
    markup.row(ctx.button(ctx._("💳 Bank card (YooKassa)"), "pay", plan, "yookassa", nonce),
               ctx.button(ctx._("🪙 CryptoBot"), "pay", plan, "cryptobot", nonce))
    markup.row(ctx.button(ctx._("⭐ Telegram Stars ({stars})", stars=money(
        billing.price(plan, "XTR"), "XTR")), "pay", plan, "stars", nonce))
    markup.row(_back(ctx))
    return text, markup


def _topup_amounts(ctx: Context, amounts: list[int], text: str
                   ) -> tuple[str, types.InlineKeyboardMarkup]:
    markup = types.InlineKeyboardMarkup()
    buttons = [ctx.button(money(amount, CURRENCY), "topamt", amount) for amount in amounts]
    for i in range(0, len(buttons), 2):
        markup.row(*buttons[i:i + 2])
    markup.row(_back(ctx))
    return text, markup


def _topup_screen(ctx: Context) -> tuple[str, types.InlineKeyboardMarkup]:
    user_id = _user_id(ctx)
    text = "\n".join([
        ctx._("Your balance: {amount}", amount=money(
            billing.balance(ctx.runtime.engine, user_id, CURRENCY), CURRENCY)),
        ctx._("How much would you like to top up?"),
    ])
    return _topup_amounts(ctx, list(ctx.runtime.settings.topup_amounts), text)


def _shortfall_screen(ctx: Context, plan: str, missing: int
                      ) -> tuple[str, types.InlineKeyboardMarkup]:
    user_id = _user_id(ctx)
    # The whole roubles missing, but not less than the smallest top-up usually offered.
    exact = max(min(ctx.runtime.settings.topup_amounts), -(-missing // 100) * 100)
    amounts = [exact, *[a for a in ctx.runtime.settings.topup_amounts if a > exact]][:4]
    text = "\n".join([
        ctx._("Not enough on the balance for {plan}: it costs {price}, you have {balance}.",
              plan=ctx._(PLAN_NAMES[plan]), price=money(billing.price(plan, CURRENCY),
                                                        CURRENCY),
              balance=money(billing.balance(ctx.runtime.engine, user_id, CURRENCY),
                            CURRENCY)),
        ctx._("{missing} more is needed. Top up the balance:", missing=money(missing,
                                                                             CURRENCY)),
    ])
    return _topup_amounts(ctx, amounts, text)


def _payment_screen(ctx: Context, started: payments.StartedPayment
                    ) -> tuple[str, types.InlineKeyboardMarkup]:
    text = "\n".join([
        ctx._("Payment #{id}: {amount} with {provider}.", id=started.payment_id,
              amount=money(started.amount_minor, started.currency),
              provider=ctx._(PROVIDER_NAMES[started.provider])),
        ctx._("Press “Pay”, complete the payment, then come back and press “Check payment”. "
              "It is credited automatically as soon as the payment comes through."),
    ])
    markup = types.InlineKeyboardMarkup()
    markup.row(types.InlineKeyboardButton(
        ctx._("💳 Pay {amount}", amount=money(started.amount_minor, started.currency)),
        url=started.confirmation_url))
    markup.row(ctx.button(ctx._("🔄 Check payment"), "chk", started.payment_id))
    markup.row(_back(ctx))
    return text, markup


def _retry_screen(ctx: Context, code: str, provider: str, action: str,
                  args: tuple[object, ...]) -> tuple[str, types.InlineKeyboardMarkup]:
    """The provider did not take the payment: say so, offer to try again (a fresh button,
    so the retry is a new press) unless it cannot work, or go back."""
    text = ctx._(START_ERRORS[code], provider=ctx._(PROVIDER_NAMES[provider]))
    markup = types.InlineKeyboardMarkup()
    if code != "provider_not_configured":
        markup.row(ctx.button(ctx._("🔄 Try again"), action, *args, _nonce()))
    markup.row(_back(ctx))
    return text, markup


# -- one payment per pressed screen ----------------------------------------------------------

def _claim_press(ctx: Context, nonce: str) -> bool:
    """True for the first press of a payment button shown once; a second press of the same
    button is refused. Without Redis the press goes ahead (a payment is better than none)."""
    key = f"{KEY_PREFIX}pay:press:{ctx.user.telegram_id}:{nonce}"
    try:
        return bool(ctx.runtime.redis.set(key, "1", nx=True, ex=PRESS_TTL))
    except redis.RedisError:
        log.warning("press not deduplicated: redis unavailable",
                    extra={"user_id": ctx.user.telegram_id})
        return True


def _release_press(ctx: Context, nonce: str) -> None:
    try:
        ctx.runtime.redis.delete(f"{KEY_PREFIX}pay:press:{ctx.user.telegram_id}:{nonce}")
    except redis.RedisError:
        pass


def _already_pressed(ctx: Context) -> None:
    ctx.answer(ctx._("This payment has already been started: see the message above."))


# -- commands and buttons --------------------------------------------------------------------

@registry.command("premium")
def premium(ctx: Context, message: types.Message) -> None:
    if ctx.limited or ctx.user.id is None:
        ctx.reply(ctx._("Premium is not available right now."))
        return
    if ctx.conversation.state == EMAIL_STATE:  # the e-mail question is left unanswered
        ctx.clear_state()
    cards.send(ctx, *main_screen(ctx))


@registry.callback("prem")
def back_to_premium(ctx: Context) -> None:
    cards.show(ctx, *main_screen(ctx))


@registry.callback("trial")
def trial(ctx: Context) -> None:
    user_id = _user_id(ctx)
    try:
        ends = billing.start_trial(ctx.runtime.engine, user_id)
    except BillingError:
        ctx.answer(ctx._("The trial can be used once."), alert=True)
    else:
        ctx.answer(ctx._("Premium trial until {date}. Enjoy!", date=local_time(ctx, ends)))
    cards.show(ctx, *main_screen(ctx))


@registry.callback("plan")
def choose_plan(ctx: Context, plan: str) -> None:
    if plan not in PLAN_NAMES:
        raise StaleButton(plan)
    cards.show(ctx, *_plan_screen(ctx, plan))


@registry.callback("pay")
def pay_for_plan(ctx: Context, plan: str, method: str, nonce: str) -> None:
    user_id = _user_id(ctx)
    if plan not in PLAN_NAMES or method not in PLAN_METHODS:
        raise StaleButton(f"{plan}/{method}")
    if not _claim_press(ctx, nonce):
        _already_pressed(ctx)
        return
    if method == "balance":
        _buy_from_balance(ctx, user_id, plan, nonce)
    elif method == "stars":
        _send_stars_invoice(ctx, user_id, plan, nonce)
    else:
        _start_outside(ctx, nonce, user_id, method, "subscription", plan=plan)


def _buy_from_balance(ctx: Context, user_id: int, plan: str, nonce: str) -> None:
    try:
        until = billing.buy_with_balance(ctx.runtime.engine, user_id, plan, CURRENCY)
    except BillingError as exc:
        _release_press(ctx, nonce)
        if exc.code != "insufficient_balance":
            raise
        missing = int(str(exc.params["missing"]))
        ctx.answer(ctx._("Not enough on the balance: {missing} more is needed.",
                         missing=money(missing, CURRENCY)))
        cards.show(ctx, *_shortfall_screen(ctx, plan, missing))
        return
    log.info("premium bought from the balance", extra={"user_id": ctx.user.telegram_id,
                                                       "plan": plan})
    ctx.answer(ctx._("Premium until {date}. Thank you!", date=local_time(ctx, until)))
    cards.show(ctx, *main_screen(ctx))


def _send_stars_invoice(ctx: Context, user_id: int, plan: str, nonce: str) -> None:
    plan_name = ctx._(PLAN_NAMES[plan])
    try:
        stars.send_invoice(
            ctx.runtime, user_id, ctx.chat_id, plan,
            title=ctx._("Premium: {plan}", plan=plan_name),
            description=ctx._("HabitBot premium for {plan}: up to {limit} habits and several "
                              "reminders per habit.", plan=plan_name, limit=MAX_HABITS),
            label=ctx._("Premium: {plan}", plan=plan_name))
    except TelegramError as exc:
        _release_press(ctx, nonce)
        log.warning("Stars invoice not sent", extra={"user_id": ctx.user.telegram_id,
                                                     "code": exc.code})
        ctx.answer(ctx._("The invoice could not be sent. Please try again."), alert=True)
        return
    ctx.answer(ctx._("The invoice is below: pay it in Telegram Stars."))


def _start_outside(ctx: Context, nonce: str, user_id: int, provider: str, payment_type: str,
                   *, plan: str | None = None, amount_minor: int | None = None,
                   notice: str | None = None) -> None:
    try:
        started = payments.start_payment(ctx.runtime, user_id, provider, payment_type,
                                         plan=plan, amount_minor=amount_minor,
                                         currency=CURRENCY)
    except BillingError as exc:
        _release_press(ctx, nonce)
        if exc.code == "receipt_email_required":
            _ask_email(ctx, {"provider": provider, "type": payment_type, "plan": plan,
                             "amount": amount_minor, "nonce": nonce})
            return
        if exc.code not in START_ERRORS:
            raise
        log.warning("payment not started", extra={"user_id": ctx.user.telegram_id,
                                                  "provider": provider, "code": exc.code})
        ctx.answer(ctx._("The payment was not started. Nothing was charged."))
        if payment_type == "subscription":
            screen = _retry_screen(ctx, exc.code, provider, "pay", (plan, provider))
        else:
            screen = _retry_screen(ctx, exc.code, provider, "topay", (amount_minor, provider))
        cards.show(ctx, *_noticed(notice, screen))
        return
    cards.show(ctx, *_noticed(notice, _payment_screen(ctx, started)))


def _noticed(notice: str | None, screen: tuple[str, types.InlineKeyboardMarkup]
             ) -> tuple[str, types.InlineKeyboardMarkup]:
    text, markup = screen
    return (f"{notice}\n\n{text}" if notice else text), markup


@registry.callback("topup")
def top_up(ctx: Context) -> None:
    cards.show(ctx, *_topup_screen(ctx))


def _valid_amount(amount: object) -> int:
    value = int(str(amount))
    if not payments.TOPUP_MIN_MINOR <= value <= payments.TOPUP_MAX_MINOR or value % 100:
        raise StaleButton(f"amount {amount}")
    return value


@registry.callback("topamt")
def top_up_amount(ctx: Context, amount: str) -> None:
    _user_id(ctx)
    value = _valid_amount(amount)
    nonce = _nonce()
    markup = types.InlineKeyboardMarkup()
    markup.row(ctx.button(ctx._("💳 Bank card (YooKassa)"), "topay", value, "yookassa", nonce),
               ctx.button(ctx._("🪙 CryptoBot"), "topay", value, "cryptobot", nonce))
    markup.row(ctx.button(ctx._("« Back"), "topup"))
    cards.show(ctx, ctx._("Top up the balance by {amount}. How would you like to pay?",
                          amount=money(value, CURRENCY)), markup)


@registry.callback("topay")
def top_up_pay(ctx: Context, amount: str, provider: str, nonce: str) -> None:
    user_id = _user_id(ctx)
    value = _valid_amount(amount)
    if provider not in OUTSIDE_PROVIDERS:
        raise StaleButton(provider)
    if not _claim_press(ctx, nonce):
        _already_pressed(ctx)
        return
    _start_outside(ctx, nonce, user_id, provider, "balance_topup", amount_minor=value)


@registry.callback("chk")
def check(ctx: Context, payment_id: str) -> None:
    user_id = _user_id(ctx)
    try:
        completion = payments.check_payment(ctx.runtime, int(payment_id), user_id)
    except BillingError as exc:
        if exc.code == "unknown_payment":
            raise StaleButton(f"payment {payment_id}") from None
        if exc.code == "payment_mismatch":
            ctx.answer(ctx._("This payment could not be verified automatically and will be "
                             "checked by hand. Nothing more needs to be paid."), alert=True)
            return
        log.warning("payment check failed", extra={"user_id": ctx.user.telegram_id,
                                                   "payment_id": payment_id,
                                                   "code": exc.code})
        ctx.answer(ctx._("The payment service is not answering right now. Please check "
                         "again in a minute."), alert=True)
        return
    if completion is None:
        ctx.answer(ctx._("The payment has not come through yet. If you have paid, wait a "
                         "minute and check again."), alert=True)
        return
    if completion.status != "succeeded":
        ctx.answer(ctx._("This payment was canceled. Nothing was charged."), alert=True)
        cards.show(ctx, *main_screen(ctx))
        return
    ctx.answer(ctx._("Payment received. Thank you!"))
    notice = ctx._("✅ Payment #{id} received.", id=completion.payment_id)
    cards.show(ctx, *main_screen(ctx, notice))


# -- the e-mail for 54-FZ receipts -----------------------------------------------------------

def _ask_email(ctx: Context, then: dict[str, object] | None) -> None:
    """Ask for the receipts' address; `then` is the payment to start once it is saved."""
    ctx.set_state(EMAIL_STATE, then=then or {})
    markup = types.InlineKeyboardMarkup()
    markup.row(ctx.button(ctx._("« Back"), "rcpback"))
    cards.show(ctx, ctx._("A receipt for every card payment is sent by e-mail, as Russian "
                          "law requires. Send the address for receipts, for example "
                          "name@example.com, or /cancel."), markup)


@registry.callback("rcpmail")
def change_email(ctx: Context) -> None:
    _user_id(ctx)
    if not ctx.runtime.settings.yookassa_receipts:
        raise StaleButton("receipts are off")
    _ask_email(ctx, None)


@registry.callback("rcpback")
def email_back(ctx: Context) -> None:
    if ctx.conversation.state == EMAIL_STATE:
        ctx.clear_state()
    cards.show(ctx, *main_screen(ctx))


@registry.state(EMAIL_STATE)
def receive_email(ctx: Context, message: types.Message) -> None:
    if ctx.limited or ctx.user.id is None:
        ctx.reply(ctx._("Premium is not available right now."))
        return
    user_id = ctx.user.id
    try:
        email = receipts.store_email(ctx.runtime.engine, user_id, message.text)
    except receipts.InvalidEmail as exc:
        log.info("receipt e-mail refused", extra={"user_id": ctx.user.telegram_id,
                                                  "reason": str(exc)})
        ctx.reply(ctx._("That does not look like an e-mail address. Send it like "
                        "name@example.com, or /cancel."))
        return
    except receipts.EmailNotSaved as exc:
        log.warning("receipt e-mail not saved", extra={"user_id": ctx.user.telegram_id,
                                                       "error": str(exc)})
        ctx.reply(ctx._("Sorry, something went wrong. Please try again."))
        return
    then = ctx.conversation.data.get("then")
    ctx.clear_state()
    log.info("receipt e-mail saved", extra={"user_id": ctx.user.telegram_id})
    notice = ctx._("✅ Receipts will be sent to {email}.", email=escape(email))
    if not (isinstance(then, dict) and _continue_payment(ctx, user_id, then, notice)):
        cards.send(ctx, *main_screen(ctx, notice))


def _continue_payment(ctx: Context, user_id: int, then: dict[str, object],
                      notice: str) -> bool:
    """Start the payment the user was heading to when asked for the e-mail, under the nonce
    of the button they pressed (so it still starts once). False when there was none."""
    provider, nonce = then.get("provider"), then.get("nonce")
    if not (isinstance(provider, str) and provider in OUTSIDE_PROVIDERS
            and isinstance(nonce, str) and nonce):
        return False
    plan: str | None = None
    amount: int | None = None
    if then.get("type") == "subscription":
        plan = str(then.get("plan"))
        if plan not in PLAN_NAMES:
            return False
    elif then.get("type") == "balance_topup":
        try:
            amount = _valid_amount(then.get("amount"))
        except (StaleButton, ValueError):
            return False
    else:
        return False
    if not _claim_press(ctx, nonce):
        ctx.reply(ctx._("This payment has already been started: see the message above."))
        return True
    _start_outside(ctx, nonce, user_id, provider, str(then["type"]), plan=plan,
                   amount_minor=amount, notice=notice)
    return True
