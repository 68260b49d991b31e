"""Reminder jobs: the minute tick (claim due schedules, reap expired leases, enqueue batches)
and the send batch (one RQ job per batch of deliveries, not per message).

The timing comes from the settings the runtime carries: REMINDER_TICK_INTERVAL (the scheduler
runs the tick on its boundaries), REMINDER_TICK_BUDGET, REMINDER_LEASE, REMINDER_LEASE_RENEW.
Tests shrink them to seconds; production runs a minute, 40 s, 75 s and 25 s."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
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
from habitbot.telegram.client import BotApiClient
from habitbot.telegram.errors import TelegramError
from habitbot.telegram.limiter import BULK
from habitbot.telegram.sender import NotYet
from workers import queues
from workers.context import job_runtime
from workers.periodic import run_periodic

log = logging.getLogger(__name__)

BATCH_SIZE = 100
PAID_BATCH_SIZE = 200  # at paid-broadcast rates a new job (fork, runtime) per 100 costs more
START_CHUNK = 25
SEND_JOB_TIMEOUT = 600
LATE_AFTER_SECONDS = 60.0  # "within a minute of its time"
# A chat whose next send slot is further away than this share of its interval (1/chat rate)
# waits in the batch while other chats are sent; shorter waits (the global pace) are slept.
CHAT_WAIT_SHARE = 0.5
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


def _lease(runtime: Runtime) -> timedelta:
    return timedelta(seconds=runtime.settings.reminder_lease)


def _tick(runtime: Runtime) -> int:
    started = time.monotonic()
    lease = _lease(runtime)
    again, reaped_missed = reminders.reap_expired(runtime.engine, lease=lease)
    if again:
        _enqueue(runtime, again)
    claimed = skipped = missed = queued = 0
    while time.monotonic() - started < runtime.settings.reminder_tick_budget:
        result = reminders.claim_due(runtime.engine,
                                     send_rate=runtime.settings.telegram_global_rate,
                                     queued_before=queued + len(again), lease=lease)
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
    """The tick (periodic job `habit_reminders`, every REMINDER_TICK_INTERVAL)."""
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
    check is at most a few seconds old) on one held connection, and marked one by one right
    after their send on a second one in autocommit (one round trip per mark: a worker killed
    mid-batch leaves at most the message in flight unmarked; see _marks_connection).

    Chats take turns: a chat's next reminder goes after every other chat of the batch has had
    as many, and a chat whose 1/s slot is not due yet waits aside (its lease renewed) while
    the others are sent — one user with many reminders at once never holds the batch."""
    runtime = job_runtime()
    settings = runtime.settings
    codec = CallbackCodec(settings.bot_token)
    lease = _lease(runtime)
    max_wait = CHAT_WAIT_SHARE / settings.telegram_chat_rate
    sent = unreachable = 0
    counted = metrics.Batch(runtime.redis)
    pending = [(int(d[0]), int(d[1])) for d in dispatches]
    held: list[reminders.DeliveryJob] = []  # started, not yet sent, in the order handed out
    sends_to: dict[int, int] = {}  # chat → reminders sent to it by this batch
    slot_at: dict[int, float] = {}  # chat → when (monotonic) its next send slot is due
    try:
        with runtime.engine.connect() as conn, _marks_connection(runtime.engine) as marks:
            leased = time.monotonic()
            while (pending or held) and unreachable < GIVE_UP_AFTER:
                job = _next_turn(held, sends_to, slot_at)
                if job is None or (pending and sends_to.get(job.telegram_id)):
                    if pending:  # chats not yet served may be in the next chunk
                        chunk, pending = pending[:START_CHUNK], pending[START_CHUNK:]
                        held.extend(reminders.start_deliveries(conn, chunk, lease=lease))
                    else:  # every chat held waits for its slot
                        time.sleep(max(0.0, min(slot_at[j.telegram_id] for j in held)
                                       - time.monotonic()))
                    continue
                if time.monotonic() - leased > settings.reminder_lease_renew:  # slow going
                    reminders.renew_leases(marks, [j.delivery_id for j in held], lease=lease)
                    leased = time.monotonic()
                try:
                    outcome = _send_one(runtime, marks, codec, job, counted, max_wait)
                except NotYet as wait:
                    slot_at[job.telegram_id] = time.monotonic() + wait.wait
                    continue
                held.remove(job)
                sends_to[job.telegram_id] = sends_to.get(job.telegram_id, 0) + 1
                sent += outcome == "sent"
                unreachable = unreachable + 1 if outcome == "unreachable" else 0
                if unreachable >= GIVE_UP_AFTER:
                    _hand_back(marks, [j.delivery_id for j in held]
                               + [delivery_id for delivery_id, _ in pending])
    finally:
        runtime.sender.flush_counters()
        counted.flush()
    log.info("reminder batch done", extra={"deliveries": len(dispatches), "sent": sent,
                                           "at": datetime.now(UTC).isoformat()})
    return sent


def _next_turn(held: list[reminders.DeliveryJob], sends_to: dict[int, int],
               slot_at: dict[int, float]) -> reminders.DeliveryJob | None:
    """The held job whose chat has had the fewest reminders of this batch (the first one
    handed out among equals), of the chats whose send slot is due; None if none is."""
    now = time.monotonic()
    ready = [j for j in held if slot_at.get(j.telegram_id, 0.0) <= now]
    return min(ready, key=lambda j: sends_to.get(j.telegram_id, 0), default=None)


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
              job: reminders.DeliveryJob, counted: metrics.Batch, max_wait: float) -> str:
    """sent | failed (permanently: blocked, bad request) | unreachable (left for the reaper)
    | lost (no longer pending when marked). Raises NotYet, having sent nothing, when the
    chat's send slot is more than `max_wait` seconds away."""
    text, markup = render(job, codec)
    params: dict[str, object] = {"chat_id": job.telegram_id, "text": text,
                                 "parse_mode": "HTML", "reply_markup": markup}
    if runtime.settings.telegram_paid_broadcast:
        params["allow_paid_broadcast"] = True  # over 30/s, paid in Stars
    try:
        message = BotApiClient.parse_response("sendMessage", runtime.sender.perform(
            "sendMessage", params, lane=BULK, max_wait=max_wait))
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
