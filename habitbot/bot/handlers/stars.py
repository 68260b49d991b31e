"""Telegram Stars in the bot process: the pre-checkout answer (Telegram waits at most 10 s, so
it is answered here, never through a queue) and the `successful_payment` message that
credits the payment."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from telebot import types

from habitbot.bot.context import Context
from habitbot.bot.money import money
from habitbot.bot.registry import registry
from habitbot.i18n import N_
from habitbot.payments import notify
from habitbot.payments import stars as stars_payments
from habitbot.payments.stars import StarsError

log = logging.getLogger(__name__)

CHECKOUT_ERRORS = {
    "bad_payload": N_("This invoice is not valid. Open /premium to get a new one."),
    "unknown_payment": N_("This invoice is not valid. Open /premium to get a new one."),
    "already_paid": N_("This invoice has already been paid. See /premium."),
    "not_payable": N_("This invoice has expired. Open /premium to get a new one."),
    "amount_mismatch": N_("The price of this invoice has changed. Open /premium to get a new "
                          "one."),
}


@registry.event("pre_checkout_query")
def pre_checkout(ctx: Context, query: types.PreCheckoutQuery) -> str | None:
    """None approves; otherwise the reason Telegram shows the user."""
    try:
        payment_id = stars_payments.check_checkout(
            ctx.runtime.engine, query.from_user.id, query.invoice_payload, query.currency,
            query.total_amount)
    except StarsError as exc:
        log.warning("pre-checkout refused", extra={"user_id": query.from_user.id,
                                                   "reason": exc.code})
        return ctx._(CHECKOUT_ERRORS.get(exc.code, CHECKOUT_ERRORS["bad_payload"]))
    log.info("pre-checkout approved", extra={"user_id": query.from_user.id,
                                             "payment_id": payment_id})
    return None


@registry.event("successful_payment")
def successful_payment(ctx: Context, message: types.Message) -> None:
    paid = message.successful_payment
    assert paid is not None
    charge_id = paid.telegram_payment_charge_id
    try:
        result = stars_payments.settle(ctx.runtime, ctx.user.telegram_id, paid.invoice_payload,
                                       paid.currency, paid.total_amount, charge_id)
    except (SQLAlchemyError, StarsError) as exc:
        # Telegram has the Stars and we could not record them: an operator finishes this
        # from the charge id (`stars.complete_charge` confirms it with Telegram and credits
        # it once), so say everything needed to find it.
        log.error("Stars payment received but not credited", extra={
            "user_id": ctx.user.telegram_id, "charge_id": charge_id,
            "payload": paid.invoice_payload, "amount": paid.total_amount,
            "error": type(exc).__name__})
        ctx.runtime.alerts.raise_alert(
            "CRITICAL", "payments stars",
            f"Stars payment not credited: charge {charge_id}, payload "
            f"{paid.invoice_payload!r}, {paid.total_amount} XTR, user {ctx.user.telegram_id} "
            f"({type(exc).__name__})", fingerprint=f"stars:uncredited:{charge_id}")
        ctx.reply(ctx._("Your payment has been received, but it could not be credited right "
                        "away. It will be credited shortly; nothing more needs to be paid."))
        return
    if result.outcome == "credited" and result.payment_id is not None:
        _tell_credited(ctx, result.payment_id)
    elif result.outcome == "refunded":
        ctx.reply(ctx._("This payment could not be applied, so {amount} was refunded to you. "
                        "Open /premium to try again.",
                        amount=money(paid.total_amount, paid.currency)))


def _tell_credited(ctx: Context, payment_id: int) -> None:
    """The payment notice as this chat's reply, so a Telegram outage keeps it for later like
    any other reply; the credit is committed whatever happens here."""
    try:
        built = notify.completion_text(ctx.runtime, payment_id)
    except SQLAlchemyError:
        log.exception("could not tell the user about a payment",
                      extra={"payment_id": payment_id})
        return
    if built is not None:
        ctx.reply(built[1])
