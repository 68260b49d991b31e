"""Drills of the reminder pipeline: the scheduler hung (1.3), reminders not arriving because
no worker runs (1.7), a 429 storm (1.9), and a periodic job failing every minute (2.5)."""

from __future__ import annotations

import os
import signal

import psycopg2

from drills.actors import Person, Reminded
from drills.core import Outcome, drill
from drills.harness import DrillStack, Lab
from tests.e2e.stack import wait_until

CTL = "supervisorctl -c supervisord.conf"


def _count_duplicates(out: Outcome, due: Reminded) -> None:
    if due.duplicated():
        out.note(f"count: {due.duplicated()} reminder(s) sent twice")
        out.recovered = False


@drill("1.3", "scheduler not running", "1.3")
def scheduler_stopped(lab: Lab, out: Outcome) -> None:
    """The scheduler hangs: supervisord still says RUNNING, nothing is enqueued any more."""
    with lab.stack("1.3") as stack:
        due = Reminded.plan(stack, 613_000, users=3, lead=20)
        with out.phase("symptom"):
            # Left hung whatever happens: the restart below (or the stack's stop) kills it.
            os.kill(int(stack.pids()["habitbot:scheduler"]), signal.SIGSTOP)
            assert "RUNNING" in stack.sh_ok(f"{CTL} status habitbot:scheduler")
            _, body = stack.wait_health(
                lambda code, b: code == 200 and not b["checks"]["scheduler"]["ok"], 240,
                "/health degraded: scheduler tick too old")
            assert body["status"] == "degraded", body
            wait_until(lambda: stack.alerts("[WARNING] health_check scheduler: last "
                                            "heartbeat"), 90,
                       "alert [WARNING] health_check scheduler")
            assert due.missing() == len(due.chats), "no reminder while the scheduler hangs"
        with out.phase("recovery"):
            stack.sh_ok(f"{CTL} restart habitbot:scheduler", timeout=60)
            wait_until(lambda: stack.log("scheduler").count("Scheduler started") >= 2, 60,
                       "scheduler log: Scheduler started")
            assert "periodic-habit_reminders" in stack.sh_ok("habitbot jobs list")
            due.wait_delivered(150)
            wait_until(lambda: stack.alerts("[INFO] health_check scheduler: recovered"), 90,
                       "alert [INFO] health_check scheduler: recovered")
        with out.phase("count"):
            out.lost = due.missing()
            _count_duplicates(out, due)


@drill("1.7", "reminders do not arrive", "1.7")
def reminders_not_arriving(lab: Lab, out: Outcome) -> None:
    """Both workers were stopped and left stopped; one user has reminders off (not lost)."""
    with lab.stack("1.7") as stack:
        due = Reminded.plan(stack, 617_000, users=4, lead=20)
        quiet = Reminded(stack, [due.chats.pop()], due.fire_at)
        stack.execute("UPDATE users SET notifications_enabled = false "
                      "WHERE telegram_id = :chat", chat=quiet.chats[0])
        with out.phase("symptom"):
            stack.ctl("stop", "habitbot:worker-0", "habitbot:worker-1")  # and forgotten
            _, body = stack.wait_health(lambda code, b: not b["checks"]["workers"]["ok"], 60,
                                        "/health: workers failing")
            assert body["status"] == "degraded" and body["checks"]["workers"]["alive"] == 0
            # Alerted once it has lasted 45 s (a stop of the whole group is not alerted):
            # within a monitor pass (60 s) and the grace period.
            wait_until(lambda: stack.alerts("[WARNING] health_check workers: 0 alive"), 150,
                       "alert [WARNING] health_check workers: 0 alive")
            wait_until(lambda: due.seconds_to_fire() == 0, 90, "the reminders' minute")
            wait_until(lambda: _queued(stack, "high") > 0, 70, "the tick waiting in `high`")
            shown = stack.sh_ok(f"habitbot users show {due.chats[0]}")
            assert "last deliveries:\n" in shown and shown.rstrip().endswith("last deliveries:"), \
                f"no delivery yet for the user: {shown}"
            assert due.missing() == len(due.chats)
        with out.phase("recovery"):
            stack.sh_ok(f"{CTL} start habitbot:worker-0 habitbot:worker-1", timeout=60)
            due.wait_delivered(120)
            wait_until(lambda: _queued(stack, "high") == 0 and _queued(stack, "reminders") == 0,
                       60, "queues drained")
            assert f"{due.fire_at:%H:%M} UTC sent" in stack.sh_ok(
                f"habitbot users show {due.chats[0]}")
            wait_until(lambda: f"{quiet.fire_at:%H:%M} UTC skipped (notifications off)" in
                       stack.sh_ok(f"habitbot users show {quiet.chats[0]}"), 30,
                       "the user with reminders off: skipped (notifications off)")
            wait_until(lambda: stack.alerts("[INFO] health_check workers: recovered"), 90,
                       "alert [INFO] health_check workers: recovered")
        with out.phase("count"):
            out.lost = due.missing() + quiet.received()[quiet.chats[0]]
            _count_duplicates(out, due)


def _queued(stack: DrillStack, queue: str) -> int:
    """The `queued` column of `habitbot jobs list` for one queue."""
    for line in stack.sh_ok("habitbot jobs list").splitlines():
        parts = line.split()
        if parts and parts[0] == queue:
            return int(parts[1])
    raise AssertionError(f"queue {queue} not in `habitbot jobs list`")


@drill("1.9", "Telegram 429 storm", "1.9")
def rate_limited(lab: Lab, out: Outcome) -> None:
    """Telegram answers 429 to every send for 15 s in the middle of a burst of reminders
    while a user is chatting; the emulator enforces Telegram's own limits."""
    with lab.stack("1.9", telegram_rate=(30, 1, 3)) as stack:
        eve = Person(stack, 5019)
        eve.onboard()
        due = Reminded.plan(stack, 619_000, users=120, lead=30)
        with out.phase("symptom"):
            wait_until(lambda: sum(due.received().values()) >= 20,
                       due.seconds_to_fire() + 75, "the burst under way")
            lab.tg.add_fault("429", methods=["sendMessage"], seconds=15, retry_after=3)
            eve.say("/today")
            wait_until(lambda: any(stack.logged(f"worker-{i}", "Telegram 429") for i in (0, 1)),
                       30, "worker log: Telegram 429")
            counters = stack.sh_ok("redis-cli -u \"$REDIS_URL\" HGETALL habitbot:metrics:sender")
            assert "bulk:rate_limited" in counters, counters
            scraped = stack.sh_ok("curl -s http://127.0.0.1:8080/metrics | grep "
                                  "habitbot_telegram_429_total")
            assert 'lane="bulk"' in scraped, scraped
        with out.phase("recovery"):
            eve.wait_answered(60)
            due.wait_delivered(180)
            assert "habit_reminders: sent" in stack.log("worker-0") + stack.log("worker-1")
        with out.phase("count"):
            out.lost = due.missing() + eve.unanswered()
            _count_duplicates(out, due)


BLOCKER = "BEGIN; CREATE INDEX reminder_deliveries_by_status ON reminder_deliveries (status);"
IDLE_IN_TRANSACTION = (
    "psql \"$DATABASE_URL\" -c \"SELECT pid, now() - xact_start AS open_for, "
    "left(query, 60) AS query FROM pg_stat_activity WHERE state = 'idle in transaction'\"")


@drill("2.5", "a periodic job failing every minute", "2.5")
def failing_job(lab: Lab, out: Outcome) -> None:
    """Someone builds an index by hand in a transaction left open: the minute tick cannot
    insert deliveries, hits the statement timeout and fails every minute."""
    with lab.stack("2.5") as stack:
        due = Reminded.plan(stack, 625_000, users=3, lead=20)
        blocker = psycopg2.connect(stack.env["DATABASE_URL"], application_name="psql")
        stuck: list[str] = []
        with out.phase("symptom"):
            with blocker.cursor() as cur:
                cur.execute(BLOCKER)
            wait_until(lambda: stack.alerts("[WARNING] job habit_reminders: failed: "
                                            "OperationalError"),
                       due.seconds_to_fire() + 90, "alert [WARNING] job habit_reminders")
            failed = stack.sh_ok("habitbot jobs failed")
            assert "workers.reminders.tick" in failed, failed
            sessions = stack.sh_ok(IDLE_IN_TRANSACTION)
            stuck = [line.split("|")[0].strip() for line in sessions.splitlines()
                     if "CREATE INDEX" in line]
            assert stuck, sessions
        with out.phase("recovery"):
            for pid in stuck:
                stack.sh_ok(f"psql \"$DATABASE_URL\" -c \"SELECT pg_terminate_backend({pid})\"")
            blocker.close()
            stack.sh_ok("habitbot jobs requeue --all")
            due.wait_delivered(120)
            assert "no failed jobs" in stack.sh_ok("habitbot jobs failed")
        with out.phase("count"):
            out.lost = due.missing()
            _count_duplicates(out, due)
