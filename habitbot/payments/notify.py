"""Telling the user what a payment or a refund did, after the commit that did it.

`notify_completion` and `notify_refund` read the committed state (never what the caller
believes), write in the user's language and timezone, send through the shared sender on the
interactive lane, and never raise: a credit that is committed stays committed whatever
Telegram does. The bot and the operator's commands call them directly.

Webhooks queue the notice instead (`enqueue_completion_notice`, `enqueue_refund_notice`), so
that a slow Telegram never holds a provider's request, and a burst of payments costs one Redis
round trip per notice rather than an RQ job each:

- the notice (`payment:<id>:<queued at>`) goes onto a Redis list by a script that also says
  whether to schedule a drain job (`workers.notices.drain_payment_notices`): only when no drain
  is running and none is queued already, so a burst schedules one job, not one per notice;
- a drain runs alone (a lock) and moves one notice at a time to an in-flight list, sends it
  and removes it. It lets go of the lock by a script that returns how many are queued, and
  goes on while any are: a notice queued during a drain is never left behind;
- a failure that may pass (Telegram 5xx or timeouts after the sender's retries, 429s, the
  database down) puts the notice back at the end of the queue and ends the run; the next
  notice's drain or the sweep every minute (`workers.notices.sweep_payment_notices`) tries
  again, for a day. A refusal for good (the user blocked the bot) is logged and dropped;
- a drain killed mid-send leaves its notice in flight, and the next drain queues it again once
  the killed one's lock has expired (`LOCK_TTL`). A supervisord restart waits for the drain in
  hand (a run hands over to a new job after `DRAIN_SECONDS`).

Each notice goes out once. A second copy is possible in two narrow windows only: a drain killed
between Telegram's answer and the removal from the in-flight list, and a Redis failure that
loses the answer to the push (the notice is then sent at once too). Without Redis the notice
is sent at once from the request.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from habitbot.i18n import Translator
from habitbot.models import Balance, Payment, PaymentRefund, User
from habitbot.payments import money
from habitbot.redis_client import KEY_PREFIX

if TYPE_CHECKING:
    from redis.commands.core import Script

    from habitbot.runtime import Runtime

log = logging.getLogger(__name__)

CURRENCY_SIGNS = {"RUB": "₽", "USD": "$", "EUR": "€", "XTR": "⭐"}

QUEUE_KEY = f"{KEY_PREFIX}notices:queue"  # LPUSH here, the drain takes from the right
INFLIGHT_KEY = f"{KEY_PREFIX}notices:inflight"
LOCK_KEY = f"{KEY_PREFIX}notices:lock"
SCHEDULED_KEY = f"{KEY_PREFIX}notices:scheduled"  # a drain job is queued, not started yet
DRAIN_JOB = "workers.notices.drain_payment_notices"
DRAIN_JOB_TIMEOUT = 300
DRAIN_SECONDS = 30.0  # then hand over to a new job: the reminders tick shares the queue
# A live drain never loses its lock (it is killed at its job timeout before this runs out);
# a killed one's lock expires, and the next drain queues its in-flight notice again.
LOCK_TTL = DRAIN_JOB_TIMEOUT + 60
# A drain job lost before it ran (Redis restarted empty) stops blocking new ones after this.
SCHEDULED_TTL = 120
MAX_AGE = 24 * 3600
SENT, DROPPED, RETRY = "sent", "dropped", "retry"

# KEYS: queue, lock, scheduled; ARGV: notice, scheduled TTL. 1: schedule a drain job.
_PUSH = """
redis.call('LPUSH', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""
# KEYS: lock, queue; ARGV: token. Let go (if still ours) and say how many wait: a notice
# queued before this saw the lock and scheduled nothing, so the caller must go on.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return redis.call('LLEN', KEYS[2])
"""


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
        elif (until := _access_end(user)) is not None and until > refund.created_at:
            text = t.gettext("↩️ Refund of {amount} for premium. Premium is now until {date}.",
                             amount=amount, date=local_date(until, user.timezone))
        else:
            text = t.gettext("↩️ Refund of {amount} for premium. Premium has ended.",
                             amount=amount)
        return user.telegram_id, text


def _access_end(user: User) -> datetime | None:
    """Premium access left after a refund: paid days or a trial still running, the later."""
    return max((d for d in (user.premium_ends_at, user.trial_ends_at) if d is not None),
               default=None)


def _deliver(runtime: Runtime, what: str, ident: int) -> bool:
    """Build and send one notice; False when there is nothing to tell (the payment is not
    succeeded, the refund is unknown). Telegram and database errors propagate."""
    from habitbot.telegram.limiter import INTERACTIVE

    build = completion_text(runtime, ident) if what == "payment" else refund_text(runtime, ident)
    if build is None:
        log.info(f"no {what} notice to send", extra={f"{what}_id": ident})
        return False
    chat_id, text = build
    runtime.sender.send_message(chat_id, text, lane=INTERACTIVE)
    log.info(f"{what} notice sent", extra={f"{what}_id": ident, "chat_id": chat_id})
    return True


def notify_completion(runtime: Runtime, payment_id: int) -> None:
    """Tell the user what a succeeded payment credited; never raises."""
    try:
        _deliver(runtime, "payment", payment_id)
    except Exception:
        log.exception("could not tell the user about a payment",
                      extra={"payment_id": payment_id})


def notify_refund(runtime: Runtime, refund_id: int) -> None:
    """Tell the user about an applied refund (by `payment_refunds.id`); never raises."""
    try:
        _deliver(runtime, "refund", refund_id)
    except Exception:
        log.exception("could not tell the user about a refund", extra={"refund_id": refund_id})


# ---------------------------------------------------------------- the queue

_INLINE = {"payment": notify_completion, "refund": notify_refund}


def enqueue_completion_notice(runtime: Runtime, payment_id: int) -> None:
    """Queue the notice of a committed credit (never raises; without Redis it is sent now)."""
    _queue(runtime, "payment", payment_id)


def enqueue_refund_notice(runtime: Runtime, refund_id: int) -> None:
    """Queue the notice of an applied refund (never raises; without Redis it is sent now)."""
    _queue(runtime, "refund", refund_id)


def _queue(runtime: Runtime, what: str, ident: int) -> None:
    context = {f"{what}_id": ident}
    try:
        schedule = _push(runtime.redis, f"{what}:{ident}:{int(time.time())}")
    except redis.RedisError as exc:
        log.warning(f"notice queue unavailable: sending the {what} notice now",
                    extra={**context, "error": type(exc).__name__})
        _INLINE[what](runtime, ident)
        return
    except Exception:
        log.exception(f"could not queue the {what} notice", extra=context)
        return
    if schedule:
        try:
            _schedule_drain(runtime.redis)
        except Exception:
            # Queued all the same: the next notice schedules a drain (the mark is taken
            # back, if Redis lets us) or the periodic sweep sends it.
            log.exception("could not schedule the notice drain", extra=context)
            with contextlib.suppress(redis.RedisError):
                runtime.redis.delete(SCHEDULED_KEY)


def _push(conn: redis.Redis, item: str) -> bool:
    """Queue `item`; True when a drain job must be scheduled for it."""
    return bool(_run(conn, _PUSH, [QUEUE_KEY, LOCK_KEY, SCHEDULED_KEY],
                     [item, SCHEDULED_TTL]))


def _schedule_drain(conn: redis.Redis) -> None:
    from rq import Queue

    from workers.queues import HIGH

    Queue(HIGH, connection=conn).enqueue(DRAIN_JOB, job_timeout=DRAIN_JOB_TIMEOUT,
                                         result_ttl=0, failure_ttl=86400)


def pending(conn: redis.Redis) -> int:
    """Notices waiting or being sent."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.llen(QUEUE_KEY)
        pipe.llen(INFLIGHT_KEY)
        return sum(int(n) for n in pipe.execute())


@dataclass
class Drained:
    sent: int = 0
    dropped: int = 0  # nothing to tell, a refusal, or given up after MAX_AGE
    stalled: bool = False  # Telegram or the database failed: the rest waits for a later run


def drain(runtime: Runtime, budget: float = DRAIN_SECONDS,
          clock: Callable[[], float] = time.monotonic) -> Drained:
    """Send what is queued, one notice at a time, until the queue is empty, a send fails for
    a reason that may pass (the notice goes back, at the end), or `budget` seconds are spent
    (the rest goes to a new drain job). Single-flight: with another drain running it returns
    at once — that drain looks at the queue again as it lets go."""
    conn = runtime.redis
    conn.delete(SCHEDULED_KEY)
    done = Drained()
    deadline = clock() + budget
    while True:
        token = uuid.uuid4().hex
        if not conn.set(LOCK_KEY, token, nx=True, ex=LOCK_TTL):
            return done
        out_of_time = False
        try:
            _requeue_inflight(conn)
            out_of_time = _send_queued(runtime, done, deadline, clock)
        finally:
            left = int(_run(conn, _RELEASE, [LOCK_KEY, QUEUE_KEY], [token]))
        if done.stalled or not left:
            return done
        if out_of_time:
            if conn.set(SCHEDULED_KEY, "1", nx=True, ex=SCHEDULED_TTL):
                _schedule_drain(conn)
            return done


def _requeue_inflight(conn: redis.Redis) -> None:
    """Notices a drain that was killed mid-send left in flight go first."""
    while (item := conn.lmove(INFLIGHT_KEY, QUEUE_KEY, "RIGHT", "RIGHT")) is not None:
        log.warning("notice left in flight by a stopped drain: queued again",
                    extra={"notice": _text(item)})


def _send_queued(runtime: Runtime, done: Drained, deadline: float,
                 clock: Callable[[], float]) -> bool:
    """Send until the queue is empty (False) or the deadline passes (True)."""
    conn = runtime.redis
    while clock() < deadline:
        item = conn.lmove(QUEUE_KEY, INFLIGHT_KEY, "RIGHT", "LEFT")
        if item is None:
            return False
        notice = _text(item)
        outcome = _attempt(runtime, notice)
        if outcome == RETRY:
            conn.lmove(INFLIGHT_KEY, QUEUE_KEY, "LEFT", "LEFT")
            done.stalled = True
            return False
        conn.lrem(INFLIGHT_KEY, 1, notice)
        if outcome == SENT:
            done.sent += 1
        else:
            done.dropped += 1
    return True


def _attempt(runtime: Runtime, item: str) -> str:
    """SENT, DROPPED (nothing to send, refused for good, unreadable, too old) or RETRY."""
    from sqlalchemy.exc import SQLAlchemyError

    from habitbot.telegram.errors import TelegramError

    try:
        what, ident_text, queued_text = item.split(":")
        ident, queued_at = int(ident_text), int(queued_text)
        if what not in _INLINE:
            raise ValueError(what)
    except ValueError:
        log.error("unreadable notice dropped", extra={"notice": item})
        return DROPPED
    context = {f"{what}_id": ident}
    try:
        return SENT if _deliver(runtime, what, ident) else DROPPED
    except TelegramError as exc:
        if not exc.transient:
            log.info(f"{what} notice not deliverable", extra={**context, "code": exc.code})
            return DROPPED
        error = f"{exc.code} {exc.description}"[:200]
    except (SQLAlchemyError, redis.RedisError) as exc:
        error = type(exc).__name__
    except Exception:
        log.exception(f"could not tell the user about a {what}", extra=context)
        return DROPPED
    if time.time() - queued_at > MAX_AGE:
        log.error(f"{what} notice given up: still failing a day after it was queued",
                  extra={**context, "error": error})
        return DROPPED
    log.warning(f"{what} notice not sent, will retry", extra={**context, "error": error})
    return RETRY


def _text(item: bytes | str) -> str:
    return item.decode() if isinstance(item, bytes) else item


_scripts: dict[str, Script] = {}


def _run(conn: redis.Redis, source: str, keys: list[str], args: list[str | int]) -> Any:
    script = _scripts.get(source)
    if script is None:
        script = _scripts[source] = conn.register_script(source)
    return script(keys=keys, args=args, client=conn)


# ---------------------------------------------------------------- jobs queued before the list

def notify_completion_job(payment_id: int) -> None:
    """A job of the former one-job-per-notice queue: still runs if one is left in Redis."""
    from workers.context import job_runtime

    notify_completion(job_runtime(), payment_id)


def notify_refund_job(refund_id: int) -> None:
    from workers.context import job_runtime

    notify_refund(job_runtime(), refund_id)
