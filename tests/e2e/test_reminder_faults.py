"""Reminder faults with real processes: the supervisord stack (bot, web, two RQ workers,
scheduler) sends a burst of reminders due in the same minute to the Telegram emulator while a
process is killed, a server restarted, the stack restarted or Telegram goes away.

Each burst is a few hundred users set up through the services, sent at Telegram's 30 msg/s, and
counted twice: the reminder messages each chat received in the emulator, and the
reminder_deliveries rows. Lost = a chat without its reminder; duplicates = reminders beyond one
per chat.

The stack runs with its timing shrunk (FAST: a tick every 2 s, a 15 s lease, a 15 s outage
instead of 2 minutes), and the burst is made due a few seconds ahead instead of on the next
minute, so each test takes seconds, not minutes. The same code runs at production timing in
one test here (a reminder set in the chat arrives within its minute, ticking on the minute)
and in the drills (`python -m drills`, drills/catalog.py): 1.7 (workers stopped with
reminders due, then back), 1.1 (the database unavailable), 1.2 (a Telegram outage), 2.1
(`supervisorctl restart habitbot:*` with reminders due), 1.9 (a 429 storm mid-burst) and 2.5
(the tick failing every minute). The logic of each fault is also covered in-process by
tests/workers/test_reminders.py.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from rq import Queue, Worker
from sqlalchemy import Engine, select

from habitbot.db import make_engine
from habitbot.models import AdminAlert, User
from habitbot.models.habits import ALL_WEEKDAYS
from habitbot.sandbox.emulator_client import EmulatorClient
from habitbot.sandbox.services import PostgresCluster, RedisServer
from habitbot.services.habits import pause_habit, set_schedule
from habitbot.services.schema import run_deploy_gate
from tests.conftest import ALERT_CHAT, make_env, redis_db
from tests.e2e.burst import (
    TICK_INSERT,
    USERS,
    Burst,
    DeliveryInsertsHeld,
    Outcome,
    blocked_by_tick,
    reminder_ticks,
    settled,
    waiting_on_locks,
)
from tests.e2e.stack import Stack, children, private_postgres, private_redis, wait_until
from workers import queues

# A stack, a burst a few seconds ahead, then up to a lease and two ticks of recovery (the
# production-timing test waits for its minute).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

RATE = 30  # Telegram's budget: a burst of USERS lasts USERS / RATE seconds
BURST_SECONDS = USERS / RATE
TICK_SECONDS = 2
LEASE_SECONDS = 15
FAST = {"REMINDER_TICK_INTERVAL": str(TICK_SECONDS), "REMINDER_LEASE": str(LEASE_SECONDS)}
PRODUCTION_TICK_SECONDS = 60
OUTAGE_SECONDS = 15
# Reminders of a killed worker wait for their lease, then for the next tick's reaper.
REAPED_WITHIN = LEASE_SECONDS + TICK_SECONDS + BURST_SECONDS + 30
MID_BURST = USERS // 5  # "mid-burst": this many reminders are out, most are still to go
UNDER_WAY = TICK_SECONDS + MID_BURST / RATE + 20  # the due burst's first MID_BURST sent


StackFactory = Callable[..., Stack]


@pytest.fixture
def start_stack(tmp_path, emulator) -> Iterator[StackFactory]:
    started: list[Stack] = []

    def start(database_url: str, redis_url: str, timing: dict[str, str] = FAST) -> Stack:
        env = make_env(database_url, redis_url, emulator.url,
                       TELEGRAM_GLOBAL_RATE=str(RATE), TELEGRAM_CHAT_RATE="1", **timing)
        stack = Stack(tmp_path / f"stack-{len(started)}", env).start()
        started.append(stack)
        stack.wait_ready()
        return stack

    yield start
    for stack in started:
        stack.stop()


@dataclass
class Services:
    database_url: str
    redis_url: str
    engine: Engine


def _migrated(database_url: str) -> Engine:
    engine = make_engine(database_url, "cli")
    run_deploy_gate(engine)
    return engine


@pytest.fixture
def shared(scratch_database, redis_url) -> Iterator[Services]:
    """A database of its own on the shared test cluster and the session's stack Redis."""
    e2e_redis = redis_db(redis_url, 1)
    conn = redis.Redis.from_url(e2e_redis)
    conn.flushdb()
    engine = _migrated(scratch_database)
    yield Services(scratch_database, e2e_redis, engine)
    engine.dispose()
    conn.flushdb()
    conn.close()


# Tests name their services before `start_stack`, so that the stack stops before its database
# and Redis go away.
@pytest.fixture
def own_postgres(redis_url) -> Iterator[tuple[PostgresCluster, Services]]:
    """A PostgreSQL cluster that this test alone may stop and start."""
    e2e_redis = redis_db(redis_url, 1)
    conn = redis.Redis.from_url(e2e_redis)
    conn.flushdb()
    with private_postgres() as cluster:
        cluster.create_database("habitbot")
        url = cluster.url("habitbot")
        engine = _migrated(url)
        yield cluster, Services(url, e2e_redis, engine)
        engine.dispose()
    conn.flushdb()
    conn.close()


@pytest.fixture
def own_redis(scratch_database) -> Iterator[tuple[RedisServer, Services]]:
    """A Redis server that this test alone may restart."""
    with private_redis() as server:
        engine = _migrated(scratch_database)
        yield server, Services(scratch_database, server.url, engine)
        engine.dispose()


def _finish(stack: Stack, burst: Burst, emu: EmulatorClient, timeout: float,
            sent: int = USERS) -> Outcome:
    """Wait until `sent` reminders of the burst are sent and nothing is left in flight."""
    burst.wait_sent(sent, timeout, f"{sent} reminders of the burst sent")
    wait_until(lambda: settled(stack), 60, "queues drained and workers idle")
    return burst.outcome(emu)


def _queued_batches(stack: Stack) -> int:
    conn = redis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        return Queue(queues.REMINDERS, connection=conn).count
    finally:
        conn.close()


def _assert_each_sent_once(outcome: Outcome) -> None:
    assert outcome.lost == []
    assert outcome.duplicated == {}
    assert outcome.statuses == {"sent": USERS}
    for chat, [message] in outcome.received.items():
        [row] = outcome.deliveries[chat]
        assert row.telegram_message_id == message["message_id"], chat


# -- 1. a worker killed with SIGKILL mid-batch ----------------------------------------------

@dataclass(frozen=True)
class Victim:
    worker_pid: int
    horse_pid: int
    job_id: str
    dispatches: list[list[int]]


def _sending_worker(stack: Stack, burst: Burst) -> Victim | None:
    """A worker whose work horse is sending a reminder batch with plenty still to send."""
    conn = redis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        pending = {row.id for row in burst.rows() if row.status == "pending"}
        for worker in Worker.all(connection=conn):
            job = worker.get_current_job()
            if job is None or job.func_name != "workers.reminders.send_batch" or not worker.pid:
                continue
            horses = children(worker.pid)
            dispatches = job.args[0]
            if horses and sum(1 for d, _ in dispatches if d in pending) >= 10:
                return Victim(worker.pid, horses[0], job.id, dispatches)
        return None
    finally:
        conn.close()


def test_worker_killed_mid_batch_is_resent_by_the_reaper_not_rq(shared, start_stack,
                                                                emu_client):
    """SIGKILL takes a worker and its work horse down in the middle of a batch (the OOM killer,
    `kill -9`). RQ would notice the abandoned job only after ~11 minutes; the deliveries' leases
    run out (75 s in production, 15 s here, plus their place in the queue) and the next tick's
    reaper hands them out again: at worst a lease and a tick after the fire time.

    At-least-once window: the one reminder the horse had handed to Telegram but not yet marked
    sent when it died is sent again — at most one duplicate per killed horse, and only for a
    delivery taken twice (attempts 2)."""
    stack = start_stack(shared.database_url, shared.redis_url)
    burst = Burst.plan(shared.engine)
    burst.wait_sent(MID_BURST, burst.seconds_to_fire() + UNDER_WAY, "the burst under way")
    victim = wait_until(lambda: _sending_worker(stack, burst), 30, "a worker mid-batch")
    os.kill(victim.worker_pid, signal.SIGKILL)
    os.kill(victim.horse_pid, signal.SIGKILL)
    in_batch = {d for d, _ in victim.dispatches}
    left = {row.id for row in burst.rows() if row.id in in_batch and row.status == "pending"}
    assert len(left) >= 5, "the worker was killed mid-batch"

    outcome = _finish(stack, burst, emu_client,
                      burst.seconds_to_fire() + REAPED_WITHIN + TICK_SECONDS)
    assert outcome.lost == []
    assert outcome.statuses == {"sent": USERS}
    assert sum(outcome.duplicated.values()) <= 1, outcome.duplicated
    for chat in outcome.duplicated:
        [row] = outcome.deliveries[chat]
        assert row.id in left and row.attempts == 2, row
    late = [row for rows in outcome.deliveries.values() for row in rows if row.id in left]
    worst = max((row.sent_at - burst.fire_at).total_seconds() for row in late)
    assert worst <= REAPED_WITHIN, f"resent {worst:.0f}s after the fire time"
    assert "habitbot:worker-0" in stack.pids() and "habitbot:worker-1" in stack.pids()


# -- 2. PostgreSQL restarted while the tick is claiming -------------------------------------

def test_postgres_restarted_mid_tick_claims_again_and_sends_each_once(own_postgres, start_stack,
                                                                      emu_client):
    """The tick is stopped inside its claim transaction (schedules locked, deliveries not yet
    written) and PostgreSQL restarts under it: the claim rolls back whole, the tick fails
    once with an alert, and the next tick claims and sends every reminder exactly once."""
    cluster, services = own_postgres
    stack = start_stack(services.database_url, services.redis_url)
    burst = Burst.plan(services.engine)
    held = DeliveryInsertsHeld(services.database_url)
    try:
        wait_until(lambda: waiting_on_locks(services.engine, [TICK_INSERT]) == 1,
                   burst.seconds_to_fire() + 30, "the tick waiting mid-claim")
        assert burst.rows() == []
        cluster.stop()
        cluster.start()
    finally:
        held.release()

    outcome = _finish(stack, burst, emu_client, 2 * TICK_SECONDS + BURST_SECONDS + 30)
    _assert_each_sent_once(outcome)
    assert {row.attempts for rows in outcome.deliveries.values() for row in rows} == {1}
    ticks = reminder_ticks(services.engine, burst.fire_at)
    assert any(t.status == "success" and t.items == USERS for t in ticks), ticks
    failed = wait_until(lambda: [m["text"] for m in emu_client.messages(ALERT_CHAT)
                                 if "job habit_reminders" in (m.get("text") or "")],
                        30, "the failed tick alerted")
    assert len(failed) == 1 and failed[0].startswith("[WARNING] job habit_reminders: failed:")


# -- 3. Redis restarted mid-burst ------------------------------------------------------------

def test_redis_restarted_mid_burst_loses_nothing(own_redis, start_stack, emu_client):
    """Redis restarts empty mid-burst (no persistence, as after a crash): the queued send
    jobs, the limiter and the periodic job definitions are gone. The database is the source of
    truth: the pending deliveries' leases run out and the reaper hands them out again, so
    every reminder still arrives exactly once — a batch in hand finishes on the database."""
    server, services = own_redis
    stack = start_stack(services.database_url, services.redis_url)
    burst = Burst.plan(services.engine)
    burst.wait_sent(MID_BURST, burst.seconds_to_fire() + UNDER_WAY, "the burst under way")
    assert _queued_batches(stack) >= 1, "batches beyond those in hand wait in the queue"
    server.stop()
    server.start()
    restarted = datetime.now(UTC)

    wait_until(lambda: reminder_ticks(services.engine, restarted), TICK_SECONDS + 30,
               "a reminder tick after Redis came back")
    outcome = _finish(stack, burst, emu_client, REAPED_WITHIN + TICK_SECONDS)
    _assert_each_sent_once(outcome)


# -- 4. supervisorctl restart habitbot:* mid-burst ------------------------------------------

def test_restarting_every_program_mid_burst_loses_and_doubles_nothing(shared, start_stack,
                                                                      emu_client):
    """`supervisorctl restart habitbot:*`: each worker finishes the batch in hand (warm
    shutdown), the queued batches wait in Redis for the new workers."""
    stack = start_stack(shared.database_url, shared.redis_url)
    before = stack.pids()
    burst = Burst.plan(shared.engine)
    burst.wait_sent(MID_BURST, burst.seconds_to_fire() + UNDER_WAY, "the burst under way")
    assert _queued_batches(stack) >= 1, "batches beyond those in hand wait in the queue"
    stack.ctl("restart", "habitbot:*")
    stack.wait_ready(scheduler_starts=2)
    assert not set(before.values()) & set(stack.pids().values())

    outcome = _finish(stack, burst, emu_client, REAPED_WITHIN)
    _assert_each_sent_once(outcome)


# -- 5. a Telegram outage ---------------------------------------------------------------------

def test_telegram_outage_delays_reminders_but_loses_and_doubles_none(
        shared, start_stack, emu_client):
    """Telegram resets every connection for a while (15 s: several ticks and leases here; the
    drill 1.2 takes it down for minutes). Each send is retried with backoff, then
    released for the reaper; after the outage every reminder arrives once. The reminder
    pipeline raises no alert of its own; the health monitor may alert about the bot's stale
    heartbeat (it looks once a minute), and the sender that Telegram is unreachable: each is
    delivered once, and one that failed to go out is tried again at most once a minute."""
    stack = start_stack(shared.database_url, shared.redis_url)
    burst = Burst.plan(shared.engine)
    burst.wait_sent(MID_BURST, burst.seconds_to_fire() + UNDER_WAY, "the burst under way")
    emu_client.add_fault("outage", seconds=OUTAGE_SECONDS)
    down = datetime.now(UTC)
    up = down + timedelta(seconds=OUTAGE_SECONDS)
    before = {row.id for row in burst.rows() if row.status == "sent"}

    outcome = _finish(stack, burst, emu_client,
                      OUTAGE_SECONDS + 2 * TICK_SECONDS + BURST_SECONDS + 60)
    _assert_each_sent_once(outcome)
    delayed = [row for rows in outcome.deliveries.values() for row in rows
               if row.id not in before]
    assert delayed and all(row.sent_at >= down for row in delayed)
    assert any(row.sent_at >= up for row in delayed)
    assert max(row.attempts for row in delayed) >= 2  # released during the outage, resent
    assert emu_client.faults() == []
    with shared.engine.connect() as conn:
        alerts = conn.execute(select(AdminAlert.fingerprint, AdminAlert.status).where(
            AdminAlert.raised_at >= down, AdminAlert.status != "suppressed")).all()
    sent = [fingerprint for fingerprint, status in alerts if status == "sent"]
    assert len(sent) == len(set(sent)), f"an alert delivered twice: {alerts}"
    # An alert that could not be delivered (Telegram is down) is tried again, at most once a
    # minute (ALERT backoff), so it reaches the operator once Telegram is back — no storm.
    failed = Counter(fingerprint for fingerprint, status in alerts if status == "failed")
    assert all(n <= 4 for n in failed.values()), f"alert attempts piled up: {alerts}"


# -- 6. a schedule edited while its tick runs ------------------------------------------------

def _in_thread(work: Callable[[], Any], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_schedule_edited_while_its_tick_runs_never_fires_the_old_time(shared, start_stack,
                                                                      emu_client):
    """Three users edit their reminder while the tick holds their schedules mid-claim: one
    moves it a minute later, one removes it, one pauses the habit. Each edit waits for the
    tick's transaction, then wins: the moved and removed schedules are replaced, which removes
    the delivery just claimed for the old time before any worker takes it; the paused habit's
    delivery is skipped when a worker re-checks it. So no reminder for the old time after the
    edit commits (a worker that had already started one would finish it: at most one); the
    moved reminder arrives once at its new time (brought forward to now: it is tomorrow), and
    the rest of the burst is untouched."""
    stack = start_stack(shared.database_url, shared.redis_url)
    burst = Burst.plan(shared.engine)
    moved, removed, paused = burst.members[:3]
    new_time = (burst.fire_at - timedelta(minutes=2)).replace(second=0).time()
    engine = make_engine(shared.database_url, "bot")  # the bot's handler threads edit at once
    edits = [
        lambda: set_schedule(engine, moved.user_id, moved.habit_id, "daily", ALL_WEEKDAYS, 7,
                             [new_time]),
        lambda: set_schedule(engine, removed.user_id, removed.habit_id, "daily", ALL_WEEKDAYS,
                             7, []),
        lambda: pause_habit(engine, paused.user_id, paused.habit_id),
    ]
    errors: list[BaseException] = []
    held = DeliveryInsertsHeld(shared.database_url)
    try:
        wait_until(lambda: waiting_on_locks(shared.engine, [TICK_INSERT]) == 1,
                   burst.seconds_to_fire() + 30, "the tick waiting mid-claim")
        threads = [_in_thread(edit, errors) for edit in edits]
        wait_until(lambda: blocked_by_tick(shared.engine) == 3, 30,
                   "the three edits waiting for the tick")
    finally:
        held.release()
    for thread in threads:
        thread.join(timeout=30)
    engine.dispose()
    assert errors == []
    wait_until(lambda: [(t.status, t.items) for t in reminder_ticks(shared.engine, burst.fire_at)
                        if t.items] == [("success", USERS)], 30,
               "the held tick done, having claimed the whole burst (no other tick claimed)")

    others = USERS - 3
    burst.wait_sent(others, BURST_SECONDS + 60, "the unedited reminders sent")
    moved_at = burst.bring_forward(moved)
    outcome = _finish(stack, burst, emu_client, 4 * TICK_SECONDS + 30, sent=others + 1)
    unedited = set(burst.chats) - {moved.chat_id, removed.chat_id, paused.chat_id}
    assert outcome.lost == [removed.chat_id, paused.chat_id]
    assert outcome.duplicated == {}
    assert all([r.fire_at for r in outcome.deliveries[c]] == [burst.fire_at] for c in unedited)
    [reminder] = outcome.received[moved.chat_id]
    assert reminder["text"] == f"⏰ {moved_at.strftime('%H:%M')} · Stretch"
    assert [(r.fire_at, r.status) for r in outcome.deliveries[moved.chat_id]] == [
        (moved_at, "sent")]
    assert outcome.deliveries[removed.chat_id] == []
    assert [(r.status, r.error) for r in outcome.deliveries[paused.chat_id]] == [
        ("skipped", "habit inactive")]


# -- 7. the sandbox promise: a reminder set for 2 minutes from now arrives within its minute --

USER = 5007


def _answer(emu: EmulatorClient, text: str | None = None, **fields: Any) -> dict:
    sent = emu.inject_message(USER, text, **fields)
    return emu.wait_for_message(USER, after_message_id=sent["message_id"], timeout=30)


def _press(emu: EmulatorClient, message: dict, label: str) -> None:
    pressed = emu.press(USER, message_id=message["message_id"], button_text=label)
    emu.wait_for_callback_answer(USER, pressed["callback_query_id"], timeout=30)


def test_reminder_set_in_the_chat_for_two_minutes_from_now_arrives_within_its_minute(
        shared, start_stack, emu_client):
    """At production timing (a tick on every minute, the 75 s lease): the one test here that
    waits for the clock."""
    start_stack(shared.database_url, shared.redis_url, timing={})
    emu_client.add_user(USER, first_name="Ann", language_code="en")
    greeting = _answer(emu_client, "/start")
    _press(emu_client, greeting, "🇬🇧 English")
    emu_client.wait_for_message(USER, lambda m: m["text"].startswith("Where are you?"),
                                timeout=30)
    confirm = _answer(emu_client, None, location={"latitude": 51.5072, "longitude": -0.1276})
    assert "Timezone: Europe/London" in confirm["text"]
    _press(emu_client, confirm, "✅ Yes")
    emu_client.wait_for_message(USER, lambda m: m["text"].startswith("All set!"), timeout=30)
    with shared.engine.connect() as conn:
        zone = conn.execute(select(User.timezone).where(User.telegram_id == USER)).scalar_one()
    assert zone == "Europe/London"

    local = (datetime.now(UTC) + timedelta(minutes=2)).astimezone(ZoneInfo(zone))
    fire_at = local.replace(second=0, microsecond=0)
    clock = fire_at.strftime("%H:%M")
    created = _answer(emu_client, f"/new Stretch daily {clock}")
    assert clock in created["text"], created["text"]
    reminder = emu_client.wait_for_message(
        USER, lambda m: m["text"].startswith("⏰"),
        timeout=(fire_at - datetime.now(UTC)).total_seconds() + PRODUCTION_TICK_SECONDS)
    assert reminder["text"] == f"⏰ {clock} · Stretch"
    assert 0 <= reminder["sent_at"] - fire_at.timestamp() < 60
