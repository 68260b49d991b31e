"""Telling the user what a payment or a refund did, after the commit that did it.

`notify_completion` and `notify_refund` read the committed state (never what the caller
believes), write in the user's language and timezone, send through the shared sender on the
interactive lane, and never raise: a credit that is committed stays committed whatever
Telegram does. Webhooks hand the notice to a worker (`enqueue_completion_notice`) so that a
slow Telegram never holds a provider's request; without Redis the notice is sent at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from habitbot.i18n import Translator
from habitbot.models import Balance, Payment, PaymentRefund, User
from habitbot.payments import money

if TYPE_CHECKING:
    from habitbot.runtime import Runtime

log = logging.getLogger(__name__)

CURRENCY_SIGNS = {"RUB": "₽", "USD": "$", "EUR": "€", "XTR": "⭐"}
NOTICE_JOB_TIMEOUT = 120


def format_money(amount_minor: int, currency: str) -> str:
    return f"{money.to_text(amount_minor, currency)} {CURRENCY_SIGNS.get(currency, currency)}"


def local_date(moment: datetime, zone: str) -> str:
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    return moment.astimezone(tz).strftime("%d.%m.%Y")


def _balance(session: Session, user_id: int, currency: str) -> int:
    amount = session.execute(select(Balance.amount_minor).where(
        Balance.user_id == user_id, Balance.currency == currency)).scalar()
    return int(amount or 0)


def completion_text(runtime: Runtime, payment_id: int) -> tuple[int, str] | None:
    """(chat id, text) telling the user what a succeeded payment credited; None otherwise."""
    with Session(runtime.engine) as session:
        row = session.execute(select(Payment, User).join(User, User.id == Payment.user_id)
                              .where(Payment.id == payment_id)).first()
        if row is None:
            return None
        payment, user = row
        if payment.status != "succeeded":
            return None
        t = Translator(user.language)
        amount = format_money(payment.amount_minor, payment.currency)
        if payment.payment_type == "balance_topup":
            balance = _balance(session, user.id, payment.currency)
            text = t.gettext("✅ Payment received: {amount} added to your balance.\n"
                             "Balance: {balance}.", amount=amount,
                             balance=format_money(balance, payment.currency))
        elif user.premium_ends_at is not None:
            text = t.gettext("✅ Payment of {amount} received: premium until {date}. "
                             "Thank you!", amount=amount,
                             date=local_date(user.premium_ends_at, user.timezone))
        else:
            return None
        return user.telegram_id, text


def refund_text(runtime: Runtime, refund_id: int) -> tuple[int, str] | None:
    """(chat id, text) telling the user about an applied refund."""
    with Session(runtime.engine) as session:
        row = session.execute(
            select(PaymentRefund, Payment, User)
            .join(Payment, Payment.id == PaymentRefund.payment_id)
            .join(User, User.id == Payment.user_id)
            .where(PaymentRefund.id == refund_id)).first()
        if row is None:
            return None
        refund, payment, user = row
        t = Translator(user.language)
        amount = format_money(refund.amount_minor, payment.currency)
        if payment.payment_type == "balance_topup":
            balance = _balance(session, user.id, payment.currency)
            text = t.gettext("↩️ Refund of {amount} for a balance top-up.\nBalance: {balance}.",
                             amount=amount, balance=format_money(balance, payment.currency))
        elif user.premium_ends_at is not None and user.premium_ends_at > refund.created_at:
            text = t.gettext("↩️ Refund of {amount} for premium. Premium is now until {date}.",
                             amount=amount,
                             date=local_date(user.premium_ends_at, user.timezone))
        else:
            text = t.gettext("↩️ Refund of {amount} for premium. Premium has ended.",
                             amount=amount)
        return user.telegram_id, text


def _send(runtime: Runtime, what: str, ident: int,
          build: tuple[int, str] | None) -> None:
    from habitbot.telegram.limiter import INTERACTIVE

    if build is None:
        log.info(f"no {what} notice to send", extra={f"{what}_id": ident})
        return
    chat_id, text = build
    runtime.sender.send_message(chat_id, text, lane=INTERACTIVE)
    log.info(f"{what} notice sent", extra={f"{what}_id": ident, "chat_id": chat_id})


def notify_completion(runtime: Runtime, payment_id: int) -> None:
    """Tell the user what a succeeded payment credited; never raises."""
    try:
        _send(runtime, "payment", payment_id, completion_text(runtime, payment_id))
    except Exception:
        log.exception("could not tell the user about a payment",
                      extra={"payment_id": payment_id})


def notify_refund(runtime: Runtime, refund_id: int) -> None:
    """Tell the user about an applied refund (by `payment_refunds.id`); never raises."""
    try:
        _send(runtime, "refund", refund_id, refund_text(runtime, refund_id))
    except Exception:
        log.exception("could not tell the user about a refund", extra={"refund_id": refund_id})


# ---------------------------------------------------------------- through a worker

def notify_completion_job(payment_id: int) -> None:
    from workers.context import job_runtime

    notify_completion(job_runtime(), payment_id)


def notify_refund_job(refund_id: int) -> None:
    from workers.context import job_runtime

    notify_refund(job_runtime(), refund_id)


def _enqueue(runtime: Runtime, job: Callable[[int], None], ident: int,
             inline: Callable[[Runtime, int], None]) -> None:
    from redis.exceptions import RedisError
    from rq import Queue

    from workers.queues import HIGH

    try:
        Queue(HIGH, connection=runtime.redis).enqueue(
            job, ident, job_timeout=NOTICE_JOB_TIMEOUT, result_ttl=0, failure_ttl=86400)
    except RedisError:
        log.warning("queue unavailable: sending the payment notice now",
                    extra={"id": ident})
        inline(runtime, ident)


def enqueue_completion_notice(runtime: Runtime, payment_id: int) -> None:
    """Hand the notice to a worker (never raises; falls back to sending now)."""
    try:
        _enqueue(runtime, notify_completion_job, payment_id, notify_completion)
    except Exception:
        log.exception("could not queue the payment notice", extra={"payment_id": payment_id})


def enqueue_refund_notice(runtime: Runtime, refund_id: int) -> None:
    try:
        _enqueue(runtime, notify_refund_job, refund_id, notify_refund)
    except Exception:
        log.exception("could not queue the refund notice", extra={"refund_id": refund_id})
