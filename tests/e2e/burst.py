"""A burst of reminders due in the same minute, set up through the services, and the count of
what came of it: the reminder messages in the Telegram emulator and the reminder_deliveries
rows. Used by the end-to-end fault tests, which take processes and servers down mid-burst."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import redis
from rq import Queue, Worker
from sqlalchemy import Engine, select, text, update

from habitbot.models import HabitSchedule, JobExecutionLog, ReminderDelivery
from habitbot.sandbox.emulator_client import EmulatorClient
from habitbot.services.habits import HabitDraft, create_habit
from habitbot.services.users import set_timezone, touch_user
from tests.e2e.stack import Stack, wait_until
from workers import queues

USERS = 300
FIRST_CHAT = 610_000
HABIT = "Stretch"


@dataclass(frozen=True)
class Member:
    chat_id: int
    user_id: int
    habit_id: int


@dataclass
class Outcome:
    """What each chat of the burst received, next to the delivery rows of its schedule."""

    received: dict[int, list[dict[str, Any]]]
    deliveries: dict[int, list[Any]]

    @property
    def lost(self) -> list[int]:
        return [chat for chat, messages in self.received.items() if not messages]

    @property
    def duplicated(self) -> dict[int, int]:
        """Chat → reminders beyond the first."""
        return {chat: len(messages) - 1 for chat, messages in self.received.items()
                if len(messages) > 1}

    @property
    def statuses(self) -> Counter[str]:
        return Counter(row.status for rows in self.deliveries.values() for row in rows)


@dataclass
class Burst:
    engine: Engine
    fire_at: datetime
    members: list[Member] = field(default_factory=list)

    @classmethod
    def plan(cls, engine: Engine, users: int = USERS, first_chat: int = FIRST_CHAT,
             lead: float = 3.0) -> Burst:
        """`users` people in UTC, each with one daily habit whose reminder is for the current
        minute, made due `lead` seconds from now — all in the same tick. Reminders are due by
        the minute, so rather than wait for the next boundary the burst's schedules are moved
        to it (as if the minute came now); their next occurrence is tomorrow, so each fires
        once here."""
        chats = range(first_chat, first_chat + users)
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        ids: dict[int, int] = {}
        for chat in chats:
            user_id = touch_user(engine, chat, None, f"User {chat}", "en").id
            assert user_id is not None
            ids[chat] = user_id
            set_timezone(engine, chat, "UTC", complete_onboarding=True)
        members = [Member(chat, ids[chat], create_habit(engine, ids[chat], HabitDraft(
            HABIT, reminder_times=[minute.time()])).id) for chat in chats]
        fire_at = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
        burst = cls(engine, fire_at, members)
        with engine.begin() as conn:
            conn.execute(update(HabitSchedule).where(
                HabitSchedule.habit_id.in_([m.habit_id for m in members]))
                .values(next_fire_at=fire_at))
        return burst

    def bring_forward(self, member: Member, seconds: float = 1.0) -> datetime:
        """`member`'s next reminder is due `seconds` from now (its time has come)."""
        when = (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)
        with self.engine.begin() as conn:
            conn.execute(update(HabitSchedule).where(HabitSchedule.habit_id == member.habit_id)
                         .values(next_fire_at=when))
        return when

    @property
    def chats(self) -> list[int]:
        return [m.chat_id for m in self.members]

    def seconds_to_fire(self) -> float:
        return max(0.0, (self.fire_at - datetime.now(UTC)).total_seconds())

    def rows(self) -> list[Any]:
        """Every delivery of the burst's habits (any fire time)."""
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(ReminderDelivery.id, ReminderDelivery.habit_id, ReminderDelivery.fire_at,
                       ReminderDelivery.status, ReminderDelivery.attempts,
                       ReminderDelivery.sent_at, ReminderDelivery.telegram_message_id,
                       ReminderDelivery.error)
                .where(ReminderDelivery.habit_id.in_([m.habit_id for m in self.members]))
                .order_by(ReminderDelivery.id)).all())

    def sent(self) -> int:
        return sum(1 for row in self.rows() if row.status == "sent")

    def wait_sent(self, count: int, timeout: float, what: str) -> None:
        wait_until(lambda: self.sent() >= count, timeout, what)

    def outcome(self, emu: EmulatorClient) -> Outcome:
        by_habit: dict[int, list[Any]] = {m.habit_id: [] for m in self.members}
        for row in self.rows():
            by_habit[row.habit_id].append(row)
        received = {m.chat_id: [msg for msg in emu.messages(m.chat_id, sender="bot")
                                if (msg.get("text") or "").startswith("⏰")]
                    for m in self.members}
        return Outcome(received, {m.chat_id: by_habit[m.habit_id] for m in self.members})


def settled(stack: Stack) -> bool:
    """No reminder batch queued and no live worker busy (a killed worker's record may still
    say busy until it expires, so only the programs supervisord runs now count)."""
    conn = redis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        if Queue(queues.REMINDERS, connection=conn).count:
            return False
        live = {int(pid) for name, pid in stack.pids().items() if "worker" in name}
        return all(w.get_state() != "busy" for w in Worker.all(connection=conn)
                   if w.pid in live)
    except redis.RedisError:
        return False
    finally:
        conn.close()


def reminder_ticks(engine: Engine, since: datetime) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(
            select(JobExecutionLog.status, JobExecutionLog.started_at, JobExecutionLog.items)
            .where(JobExecutionLog.job_name == "habit_reminders",
                   JobExecutionLog.started_at >= since)
            .order_by(JobExecutionLog.started_at)).all())


# -- holding the tick mid-claim ------------------------------------------------------------

class DeliveryInsertsHeld:
    """A SHARE lock on reminder_deliveries: the tick's claim runs up to its INSERT and waits
    there, holding its schedules FOR UPDATE, until the lock is released (or its connection
    dies with the server). Readers and SELECT … FOR UPDATE are not blocked."""

    def __init__(self, database_url: str) -> None:
        self.conn = psycopg2.connect(database_url, connect_timeout=5)
        with self.conn.cursor() as cur:
            cur.execute("LOCK TABLE reminder_deliveries IN SHARE MODE")

    def release(self) -> None:
        try:
            self.conn.rollback()
            self.conn.close()
        except psycopg2.Error:  # the server was restarted under it
            pass


def waiting_on_locks(engine: Engine, statements: Sequence[str]) -> int:
    """Sessions of this database waiting for a lock while running one of `statements`
    (matched by their beginning)."""
    clauses = " OR ".join(f"query LIKE :s{i}" for i in range(len(statements)))
    params = {f"s{i}": f"{s}%" for i, s in enumerate(statements)}
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            f"AND wait_event_type = 'Lock' AND ({clauses})"), params).scalar_one()


def blocked_by_tick(engine: Engine) -> int:
    """Sessions waiting for a lock that the tick (waiting at its INSERT) holds."""
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity AS waiter JOIN pg_stat_activity AS tick "
            "ON tick.pid = ANY(pg_blocking_pids(waiter.pid)) "
            "WHERE tick.datname = current_database() AND tick.query LIKE :insert"),
            {"insert": f"{TICK_INSERT}%"}).scalar_one()


TICK_INSERT = "INSERT INTO reminder_deliveries"
