"""Reminder jobs: the minute tick (claim due schedules, reap expired leases, enqueue batches)
and the send batch (one RQ job per batch of deliveries, not per message)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal
from html import escape

from rq import Queue
from rq.job import Retry
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from habitbot import metrics
from habitbot.i18n import Translator
from habitbot.runtime import Runtime
from habitbot.services import reminders
from habitbot.telegram.callbacks import CallbackCodec
from habitbot.telegram.errors import TelegramError
from habitbot.telegram.limiter import BULK
from workers import queues
from workers.context import job_runtime
from workers.periodic import run_periodic

log = logging.getLogger(__name__)

BATCH_SIZE = 100
PAID_BATCH_SIZE = 200  # at paid-broadcast rates a new job (fork, runtime) per 100 costs more
START_CHUNK = 25
TICK_BUDGET_SECONDS = 40.0
SEND_JOB_TIMEOUT = 600
LATE_AFTER_SECONDS = 60.0  # "within a minute of its time"
RENEW_AFTER = reminders.LEASE.total_seconds() / 3  # renew a chunk's leases this often
GIVE_UP_AFTER = 3  # consecutive sends Telegram did not answer: hand the rest of the batch back


def _enqueue(runtime: Runtime, dispatches: list[reminders.Dispatch]) -> int:
    queue = Queue(queues.REMINDERS, connection=runtime.redis)
    items = [list(d) for d in dispatches]
    size = PAID_BATCH_SIZE if runtime.settings.telegram_paid_broadcast else BATCH_SIZE
    batches = [items[i:i + size] for i in range(0, len(items), size)]
    for batch in batches:
        queue.enqueue(send_batch, batch, job_timeout=SEND_JOB_TIMEOUT,
                      # Re-run at once on a crash; the reaper covers the rest (an interval
                      # would need an RQ worker started --with-scheduler).
                      retry=Retry(max=2), result_ttl=300,
                      failure_ttl=7 * 24 * 3600)
    return len(batches)


def _tick(runtime: Runtime) -> int:
    started = time.monotonic()
    again, reaped_missed = reminders.reap_expired(runtime.engine)
    if again:
        _enqueue(runtime, again)
    claimed = skipped = missed = queued = 0
    while time.monotonic() - started < TICK_BUDGET_SECONDS:
        result = reminders.claim_due(runtime.engine,
                                     send_rate=runtime.settings.telegram_global_rate,
                                     queued_before=queued + len(again))
        claimed += result.claimed
        skipped += result.skipped
        missed += result.missed
        if result.pending_ids:  # enqueue only after the claim's commit
            _enqueue(runtime, result.dispatches)
            queued += len(result.pending_ids)
        if result.claimed < reminders.CLAIM_CHUNK:
            break
    log.info(f"habit_reminders: sent {queued}", extra={
        "claimed": claimed, "queued": queued, "skipped": skipped,
        "missed": missed + reaped_missed, "requeued": len(again)})
    with metrics.Batch(runtime.redis) as batch:
        for outcome, count in (("claimed", claimed), ("skipped", skipped),
                               ("missed", missed + reaped_missed), ("requeued", len(again))):
            if count:
                batch.incr("habitbot_reminders_total", count, outcome=outcome)
    return claimed + len(again)


def tick() -> int:
    """The minute tick (periodic job `habit_reminders`)."""
    return run_periodic("habit_reminders", _tick, lock_ttl=120)


def _amount(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def render(job: reminders.DeliveryJob, codec: CallbackCodec) -> tuple[str, dict]:
    """The reminder message and its check-in buttons (in the user's language)."""
    t = Translator(job.language)
    text = t.gettext("⏰ {time} · {name}", time=reminders.local_fire_time(job),
                     name=escape(job.habit_name, quote=False))
    day = job.local_day.toordinal()

    def button(label: str, action: str) -> dict:
        return {"text": label, "callback_data": codec.encode(job.telegram_id, "rm",
                                                             job.habit_id, day, action)}

    if job.habit_kind == "measurable" and job.target_value is not None:
        unit = f" {job.target_unit}" if job.target_unit else ""
        done = button(t.gettext("✅ {amount}{unit}", amount=_amount(job.target_value),
                                unit=unit), "d")
    else:
        done = button(t.gettext("✅ Done"), "d")
    markup = {"inline_keyboard": [[done, button(t.gettext("⏭ Skip"), "s")]]}
    return text, markup


def send_batch(dispatches: list[list[int]]) -> int:
    """Send each handed-out delivery ([id, attempts]) through the bulk lane; returns how many
    were sent. Deliveries are started START_CHUNK at a time (one transaction each, so the skip
    check is at most a chunk's sending time old) on one held connection, and marked one by one
    right after their send on a second one in autocommit (one round trip per mark: a worker
    killed mid-batch leaves at most the message in flight unmarked; see _marks_connection)."""
    runtime = job_runtime()
    codec = CallbackCodec(runtime.settings.bot_token)
    paid = runtime.settings.telegram_paid_broadcast
    sent = unreachable = 0
    counted = metrics.Batch(runtime.redis)
    pending = [(int(d[0]), int(d[1])) for d in dispatches]
    try:
        with runtime.engine.connect() as conn, _marks_connection(runtime.engine) as marks:
            while pending and unreachable < GIVE_UP_AFTER:
                chunk, pending = pending[:START_CHUNK], pending[START_CHUNK:]
                jobs = reminders.start_deliveries(conn, chunk)
                leased = time.monotonic()
                for index, job in enumerate(jobs):
                    if time.monotonic() - leased > RENEW_AFTER:  # slow going (a 429 pause)
                        reminders.renew_leases(marks, [j.delivery_id for j in jobs[index:]])
                        leased = time.monotonic()
                    outcome = _send_one(runtime, marks, codec, job, paid, counted)
                    sent += outcome == "sent"
                    unreachable = unreachable + 1 if outcome == "unreachable" else 0
                    if unreachable >= GIVE_UP_AFTER:
                        _hand_back(marks, [j.delivery_id for j in jobs[index + 1:]]
                                   + [delivery_id for delivery_id, _ in pending])
                        break
    finally:
        runtime.sender.flush_counters()
        counted.flush()
    log.info("reminder batch done", extra={"deliveries": len(dispatches), "sent": sent,
                                           "at": datetime.now(UTC).isoformat()})
    return sent


def _hand_back(conn: Connection, delivery_ids: list[int]) -> None:
    """Telegram is unreachable: the rest of the batch goes back to the reaper at once, rather
    than every delivery spending its own retries here and keeping the worker from the minute
    tick."""
    log.warning("reminder batch paused: Telegram unreachable",
                extra={"handed_back": len(delivery_ids)})
    for delivery_id in delivery_ids:
        reminders.release_delivery(conn, delivery_id, "not sent: Telegram unreachable")


@contextmanager
def _marks_connection(engine: Engine) -> Iterator[Connection]:
    """An autocommit connection whose commits do not wait for the WAL flush: a mark is one
    round trip, no fsync. Only a PostgreSQL crash (not a restart) can lose the last moment of
    marks; those reminders are sent again by the reaper — inside the at-least-once window."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("SET synchronous_commit TO off")
        try:
            yield conn
        finally:  # the connection goes back to the pool as it came
            with suppress(SQLAlchemyError):
                conn.exec_driver_sql("RESET synchronous_commit")


def _send_one(runtime: Runtime, conn: Connection, codec: CallbackCodec,
              job: reminders.DeliveryJob, paid: bool, counted: metrics.Batch) -> str:
    """sent | failed (permanently: blocked, bad request) | unreachable (left for the reaper)
    | lost (no longer pending when marked)."""
    text, markup = render(job, codec)
    params: dict[str, object] = {"chat_id": job.telegram_id, "text": text,
                                 "parse_mode": "HTML", "reply_markup": markup}
    if paid:
        params["allow_paid_broadcast"] = True  # over 30/s, paid in Stars
    try:
        message = runtime.sender.call("sendMessage", params, lane=BULK)
    except TelegramError as exc:
        if exc.permanent:
            reminders.finish_delivery(conn, job.delivery_id, "failed",
                                      error=f"{exc.code} {exc.description}"[:500])
            counted.incr("habitbot_reminders_total", outcome="failed")
            return "failed"
        # The reaper hands it out again within the catch-up window.
        reminders.release_delivery(conn, job.delivery_id, f"{exc.code} {exc.description}")
        return "unreachable"
    if not reminders.finish_delivery(conn, job.delivery_id, "sent",
                                     message_id=message.get("message_id")):
        return "lost"
    delay = (datetime.now(UTC) - job.fire_at).total_seconds()
    counted.incr("habitbot_reminders_total", outcome="sent")
    if delay > LATE_AFTER_SECONDS:
        counted.incr("habitbot_reminders_total", outcome="late")
    counted.observe("habitbot_reminder_delay_seconds", delay)
    return "sent"
