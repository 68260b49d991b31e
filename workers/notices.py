"""Notices about the account that workers send: premium ending, and payments and refunds.

Premium notices: 3 days and 1 day before the trial or premium ends, and when it has ended.
Every 10 minutes the tick downgrades ended tiers (`billing.expire_tiers`: the tier only, never
the user's data), finds who is due a notice and hands them to send jobs in the bulk lane. A
notice is about one period: (user, kind, the instant the period ends). Its `premium_notices`
row, inserted just before the send under that unique key, is what makes it go out once — a
second scheduler, a rerun tick or a retried job finds the row and sends nothing. A renewed
period has a new end, hence its own notices. A send that fails for a transient reason gives the
row back, so the next tick tries again; a user who blocked the bot is skipped. Notices are
about the account, so they go out whether or not the user turned reminders off.

Payment and refund notices: webhooks queue them in Redis and schedule `drain_payment_notices`
when no drain is running (`habitbot.payments.notify`); every minute the scheduler's
`payment_notices` job sweeps what a lost or killed drain, or a Telegram outage with no payment
since, left in the queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
from rq import Queue
from sqlalchemy import ColumnElement, Engine, and_, case, delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert

from habitbot.i18n import N_, Translator
from habitbot.models import PremiumNotice, User
from habitbot.payments import notify
from habitbot.runtime import Runtime
from habitbot.services import billing
from habitbot.services.habits import MAX_HABITS
from habitbot.telegram.errors import TelegramError
from habitbot.telegram.limiter import BULK
from workers import queues
from workers.context import job_runtime
from workers.periodic import run_periodic

log = logging.getLogger(__name__)

BATCH = 50
BEFORE = {"3d": timedelta(days=3), "1d": timedelta(days=1)}
# An end older than this gets no "has ended" notice (after a long outage, or at the first run
# of this job, telling people about an old expiry helps nobody).
EXPIRED_GRACE = timedelta(days=2)

TEXTS = {
    ("trial", "3d"): N_("⏳ Your premium trial ends on {date}. To keep up to {limit} habits "
                        "and several reminders per habit, get premium in /premium."),
    ("trial", "1d"): N_("⏳ Your premium trial ends soon, on {date}. To keep up to {limit} "
                        "habits and several reminders per habit, get premium in /premium."),
    ("premium", "3d"): N_("⏳ Your premium ends on {date}. Renew it in /premium to keep "
                          "up to {limit} habits and several reminders per habit."),
    ("premium", "1d"): N_("⏳ Your premium ends soon, on {date}. Renew it in /premium to keep "
                          "up to {limit} habits and several reminders per habit."),
    ("trial", "expired"): N_("Your premium trial has ended. Your habits and history are all "
                             "kept; the free plan has up to 3 active habits with one reminder "
                             "each. Get premium in /premium."),
    ("premium", "expired"): N_("Your premium has ended. Your habits and history are all kept; "
                               "the free plan has up to 3 active habits with one reminder "
                               "each. Renew it in /premium."),
}


@dataclass(frozen=True)
class DueNotice:
    user_id: int
    telegram_id: int
    language: str
    timezone: str
    tier: str  # trial | premium
    kind: str  # 3d | 1d | expired
    period_ends_at: datetime

    def as_job_args(self) -> tuple[int, int, str, str, str, str, str]:
        return (self.user_id, self.telegram_id, self.language, self.timezone, self.tier,
                self.kind, self.period_ends_at.isoformat())

    @classmethod
    def from_job_args(cls, args: list | tuple) -> DueNotice:
        user_id, telegram_id, language, zone, tier, kind, ends = args
        return cls(int(user_id), int(telegram_id), str(language), str(zone), str(tier),
                   str(kind), datetime.fromisoformat(str(ends)))


def kind_for(ends_at: datetime, now: datetime) -> str | None:
    """Which notice a period ending at `ends_at` is due at `now`, if any."""
    if ends_at <= now:
        return "expired" if ends_at > now - EXPIRED_GRACE else None
    if ends_at <= now + BEFORE["1d"]:
        return "1d"
    if ends_at <= now + BEFORE["3d"]:
        return "3d"
    return None


def _period() -> tuple[ColumnElement[datetime], ColumnElement[str]]:
    """The end of the user's premium access and whether it is the trial's or premium's:
    with both, the later one is what the user will lose (GREATEST ignores NULLs)."""
    ends = func.greatest(User.premium_ends_at, User.trial_ends_at)
    tier = case((and_(User.premium_ends_at.is_not(None),
                      or_(User.trial_ends_at.is_(None),
                          User.premium_ends_at >= User.trial_ends_at)), "premium"),
                else_="trial")
    return ends, tier


def due_notices(engine: Engine, now: datetime) -> list[DueNotice]:
    """Users with a period ending inside the notice windows and no notice for it yet."""
    low, high = now - EXPIRED_GRACE, now + BEFORE["3d"]
    ends, tier = _period()
    in_window = or_(User.premium_ends_at.between(low, high),
                    User.trial_ends_at.between(low, high))
    with engine.connect() as conn:
        rows = conn.execute(
            select(User.id, User.telegram_id, User.language, User.timezone,
                   tier.label("tier"), ends.label("ends"))
            .where(in_window, User.is_blocked.is_(False))
            .order_by(User.id)).all()
        due = []
        for row in rows:
            kind = kind_for(row.ends, now)
            if kind is None:
                continue
            due.append(DueNotice(row.id, row.telegram_id, row.language, row.timezone,
                                 row.tier, kind, row.ends))
        if not due:
            return []
        sent = {tuple(r) for r in conn.execute(
            select(PremiumNotice.user_id, PremiumNotice.kind, PremiumNotice.period_ends_at)
            .where(PremiumNotice.user_id.in_([d.user_id for d in due])))}
    return [d for d in due if (d.user_id, d.kind, d.period_ends_at) not in sent]


def render(notice: DueNotice) -> str:
    t = Translator(notice.language)
    try:
        local = notice.period_ends_at.astimezone(ZoneInfo(notice.timezone))
    except ZoneInfoNotFoundError:
        local = notice.period_ends_at.astimezone(UTC)
    return t.gettext(TEXTS[(notice.tier, notice.kind)], date=local.strftime("%d.%m.%Y %H:%M"),
                     limit=MAX_HABITS)


def _still_due(engine: Engine, notice: DueNotice) -> bool:
    """The period has not changed since the tick (no renewal, no block) — checked before the
    claim, so a renewal between tick and send costs no notice of the new period."""
    ends, tier = _period()
    with engine.connect() as conn:
        row = conn.execute(select(ends.label("ends"), tier.label("tier"), User.is_blocked)
                           .where(User.id == notice.user_id)).first()
    return (row is not None and not row.is_blocked and row.ends == notice.period_ends_at
            and row.tier == notice.tier)


def claim(engine: Engine, notice: DueNotice) -> int | None:
    """The notice's row, or None when it was already claimed (sent, or being sent)."""
    with engine.begin() as conn:
        return conn.execute(
            insert(PremiumNotice).values(user_id=notice.user_id, kind=notice.kind,
                                         tier=notice.tier,
                                         period_ends_at=notice.period_ends_at)
            .on_conflict_do_nothing(
                index_elements=["user_id", "kind", "period_ends_at"])
            .returning(PremiumNotice.id)).scalar()


def _release(engine: Engine, notice_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(delete(PremiumNotice).where(PremiumNotice.id == notice_id))


def send_one(runtime: Runtime, notice: DueNotice) -> bool:
    if not _still_due(runtime.engine, notice):
        return False
    notice_id = claim(runtime.engine, notice)
    if notice_id is None:
        return False
    extra = {"user_id": notice.telegram_id, "kind": notice.kind, "tier": notice.tier}
    try:
        runtime.sender.call("sendMessage", {"chat_id": notice.telegram_id,
                                            "text": render(notice)}, lane=BULK)
    except TelegramError as exc:
        if exc.transient:
            _release(runtime.engine, notice_id)
            log.warning("premium notice not sent, will retry", extra={**extra,
                                                                      "code": exc.code})
        else:
            log.info("premium notice not deliverable", extra={**extra, "code": exc.code})
        return False
    log.info("premium notice sent", extra=extra)
    return True


def send_notices(batch: list[tuple[int, int, str, str, str, str, str]]) -> int:
    """An RQ job: send one batch of notices; returns how many went out."""
    runtime = job_runtime()
    return sum(send_one(runtime, DueNotice.from_job_args(args)) for args in batch)


def run(runtime: Runtime, now: datetime | None = None) -> int:
    """Downgrade what has ended, then queue the notices due; returns how many were queued."""
    now = now or datetime.now(UTC)
    downgraded = billing.expire_tiers(runtime.engine, now)
    if downgraded:
        log.info("tiers expired", extra={"users": downgraded})
    due = due_notices(runtime.engine, now)
    queue = Queue(queues.REMINDERS, connection=runtime.redis)
    for i in range(0, len(due), BATCH):
        queue.enqueue(send_notices, [d.as_job_args() for d in due[i:i + BATCH]],
                      job_timeout=600, result_ttl=300)
    return len(due)


def tick() -> int:
    return run_periodic("premium_notices", run)


# ---------------------------------------------------------------- payment and refund notices

def drain_payment_notices() -> int:
    """An RQ job, scheduled by the webhook that queues a notice: send the queued ones."""
    done = notify.drain(job_runtime())
    if done.sent or done.dropped or done.stalled:
        log.info("payment notices drained", extra={"sent": done.sent, "dropped": done.dropped,
                                                   "stalled": done.stalled})
    return done.sent


def sweep_payment_notices() -> int:
    """Send notices nobody is draining: a drain job lost before it ran, one killed mid-send
    (once its lock expires), or notices kept back by a Telegram outage with no payment since.
    The drain is single-flight, so a sweep beside a running drain does nothing."""
    runtime = job_runtime()
    try:
        if not notify.pending(runtime.redis):
            return 0
        return drain_payment_notices()
    except redis.RedisError as exc:
        log.warning("payment notices not swept: Redis unavailable",
                    extra={"error": type(exc).__name__})
        return 0

