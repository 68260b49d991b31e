"""Weekly summary jobs: every 15 minutes claim the users whose summary evening has come, then
send in batches through the bulk lane."""

from __future__ import annotations

import logging
from datetime import date
from html import escape

from rq import Queue

from habitbot.i18n import Translator
from habitbot.runtime import Runtime
from habitbot.services import summaries
from habitbot.telegram.errors import TelegramError
from habitbot.telegram.limiter import BULK
from habitbot.telegram.limits import fit_lines
from workers import queues
from workers.context import job_runtime
from workers.periodic import run_periodic

log = logging.getLogger(__name__)
BATCH = 50


def _claim(runtime: Runtime) -> int:
    targets = summaries.claim_due(runtime.engine)
    queue = Queue(queues.REMINDERS, connection=runtime.redis)
    for i in range(0, len(targets), BATCH):
        batch = [(t.user_id, t.telegram_id, t.language, t.local_day.isoformat())
                 for t in targets[i:i + BATCH]]
        queue.enqueue(send_summaries, batch, job_timeout=600, result_ttl=300)
    return len(targets)


def tick() -> int:
    return run_periodic("weekly_summaries", _claim)


def render(language: str, lines: list[summaries.WeekLine]) -> str:
    t = Translator(language)
    rows = []
    total_done = total_due = 0
    for line in lines:
        mark = "✅" if line.due and line.done >= line.due else "▫️"
        unit = (t.ngettext("{n} week", "{n} weeks", line.streak) if line.streak_unit == "weeks"
                else t.ngettext("{n} day", "{n} days", line.streak))
        rows.append(t.gettext("{mark} {name} — {done}/{due} · 🔥 {streak}", mark=mark,
                             name=escape(line.name, quote=False), done=line.done,
                             due=line.due, streak=unit))
        total_done += min(line.done, line.due)
        total_due += line.due
    tail = []
    if total_due:
        tail.append("")
        tail.append(t.gettext("Overall: {percent}% of what was planned.",
                              percent=round(100 * total_done / total_due)))
    tail.append(t.gettext("Turn these summaries off in /settings."))
    # Within Telegram's 4,096 characters however many habits there are.
    head = [t.gettext("📊 <b>Your week</b>")]
    return "\n".join(fit_lines(head, rows, tail, lambda n: t.ngettext(
        "…and {n} more habit", "…and {n} more habits", n)))


def send_summaries(batch: list[tuple[int, int, str, str]]) -> int:
    runtime = job_runtime()
    sent = 0
    for user_id, telegram_id, language, day in batch:
        lines = summaries.week_lines(runtime.engine, user_id, date.fromisoformat(day))
        if not lines:
            continue
        try:
            runtime.sender.call("sendMessage", {"chat_id": telegram_id, "parse_mode": "HTML",
                                                "text": render(language, lines)}, lane=BULK)
            sent += 1
        except TelegramError as exc:
            log.warning("weekly summary not sent", extra={"user_id": telegram_id,
                                                          "code": exc.code})
    return sent
