"""Reminder jobs: the minute tick (claim due schedules, reap expired leases, enqueue batches)
and the send batch (one RQ job per batch of deliveries, not per message)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from decimal import Decimal
from html import escape

from rq import Queue
from rq.job import Retry

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

BATCH_SIZE = 50
TICK_BUDGET_SECONDS = 40.0
SEND_JOB_TIMEOUT = 600


def _enqueue(runtime: Runtime, dispatches: list[reminders.Dispatch]) -> int:
    queue = Queue(queues.REMINDERS, connection=runtime.redis)
    items = [list(d) for d in dispatches]
    batches = [items[i:i + BATCH_SIZE] for i in range(0, len(items), BATCH_SIZE)]
    for batch in batches:
        queue.enqueue(send_batch, batch, job_timeout=SEND_JOB_TIMEOUT,
                      retry=Retry(max=3, interval=[10, 30, 60]), result_ttl=300,
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
    were sent."""
    runtime = job_runtime()
    codec = CallbackCodec(runtime.settings.bot_token)
    sent = 0
    for delivery_id, attempts in dispatches:
        job = reminders.start_delivery(runtime.engine, delivery_id, attempts)
        if job is None:
            continue
        text, markup = render(job, codec)
        params: dict[str, object] = {"chat_id": job.telegram_id, "text": text,
                                     "parse_mode": "HTML", "reply_markup": markup}
        if runtime.settings.telegram_paid_broadcast:
            params["allow_paid_broadcast"] = True  # over 30/s, paid in Stars
        try:
            message = runtime.sender.call("sendMessage", params, lane=BULK)
        except TelegramError as exc:
            if exc.permanent:
                reminders.finish_delivery(runtime.engine, delivery_id, "failed",
                                          error=f"{exc.code} {exc.description}"[:500])
            else:  # the reaper hands it out again within the catch-up window
                reminders.release_delivery(runtime.engine, delivery_id,
                                           f"{exc.code} {exc.description}")
            continue
        if reminders.finish_delivery(runtime.engine, delivery_id, "sent",
                                     message_id=message.get("message_id")):
            sent += 1
    log.info("reminder batch done", extra={"deliveries": len(dispatches), "sent": sent,
                                           "at": datetime.now(UTC).isoformat()})
    return sent
