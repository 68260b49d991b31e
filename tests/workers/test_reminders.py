"""Reminders end to end in-process: claim, send through the sender, check in from the
reminder; skips, missed, duplicates, leases, DST."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select, update

from habitbot.models import HabitCheckin, HabitSchedule, ReminderDelivery, RestPeriod, User
from habitbot.runtime import build_runtime
from habitbot.services import habits as svc
from habitbot.services import reminders
from habitbot.services.habits import HabitDraft
from tests.support.jobs import install, run_burst
from workers import queues
from workers import reminders as jobs

ALICE = 7001


def _user(engine, telegram_id: int, zone: str = "UTC", **values) -> int:
    with engine.begin() as conn:
        return conn.execute(insert(User).values(telegram_id=telegram_id, timezone=zone,
                                                language="en", **values)
                            .returning(User.id)).scalar_one()


def _habit(engine, user_id: int, name: str = "Read", at: time = time(8, 30), **kw) -> int:
    return svc.create_habit(engine, user_id, HabitDraft(name, reminder_times=[at], **kw)).id


def _make_due(engine, habit_id: int, when: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(HabitSchedule).where(HabitSchedule.habit_id == habit_id)
                     .values(next_fire_at=when))


def _deliveries(engine):
    with engine.connect() as conn:
        return conn.execute(select(ReminderDelivery.status, ReminderDelivery.error,
                                   ReminderDelivery.telegram_message_id)
                            .order_by(ReminderDelivery.id)).all()


def _work(redis_conn) -> None:
    run_burst(redis_conn, queues.REMINDERS)


@pytest.fixture
def alice(engine, emu_client):
    emu_client.add_user(ALICE, first_name="Alice", language_code="en")
    return _user(engine, ALICE)


def test_due_reminder_is_sent_once_with_check_in_buttons(runtime, engine, redis_conn,
                                                        emu_client, alice):
    habit = _habit(engine, alice)
    now = datetime.now(UTC)
    _make_due(engine, habit, now - timedelta(seconds=5))
    assert jobs._tick(runtime) == 1
    assert jobs._tick(runtime) == 0  # nothing due any more
    _work(redis_conn)
    [(status, error, message_id)] = _deliveries(engine)
    assert status == "sent" and message_id is not None
    [message] = emu_client.messages(ALICE, sender="bot")
    assert message["text"].endswith("· Read") and message["text"].startswith("⏰ ")
    buttons = [b["text"] for b in message["reply_markup"]["inline_keyboard"][0]]
    assert buttons == ["✅ Done", "⏭ Skip"]
    with engine.connect() as conn:
        next_fire = conn.execute(select(HabitSchedule.next_fire_at)).scalar_one()
    assert next_fire > now and next_fire.astimezone(UTC).time() == time(8, 30)


@pytest.mark.parametrize("setup,reason", [
    ("notifications_off", "notifications off"),
    ("blocked", "blocked the bot"),
    ("rest", "rest"),
    ("checked_in", "already checked in"),
])
def test_skipped_reminders_send_nothing(runtime, engine, redis_conn, emu_client, alice,
                                        setup, reason):
    habit = _habit(engine, alice)
    today = datetime.now(UTC).date()
    with engine.begin() as conn:
        if setup == "notifications_off":
            conn.execute(update(User).values(notifications_enabled=False))
        elif setup == "blocked":
            conn.execute(update(User).values(is_blocked=True))
        elif setup == "rest":
            conn.execute(insert(RestPeriod).values(user_id=alice, starts_on=today,
                                                   ends_on=today))
        else:
            conn.execute(insert(HabitCheckin).values(habit_id=habit, user_id=alice,
                                                     local_date=today, status="done"))
    _make_due(engine, habit, datetime.now(UTC) - timedelta(seconds=5))
    jobs._tick(runtime)
    _work(redis_conn)
    assert [(d.status, d.error) for d in _deliveries(engine)] == [("skipped", reason)]
    assert emu_client.messages(ALICE, sender="bot") == []


def test_weekly_target_met_skips_the_reminder(runtime, engine, alice):
    habit = _habit(engine, alice, frequency="times_per_week", times_per_week=1)
    today = datetime.now(UTC).date()
    with engine.begin() as conn:
        conn.execute(insert(HabitCheckin).values(
            habit_id=habit, user_id=alice, local_date=today - timedelta(days=today.weekday()),
            status="done"))
    _make_due(engine, habit, datetime.now(UTC) - timedelta(seconds=5))
    jobs._tick(runtime)
    if today.weekday() == 0:
        assert _deliveries(engine)[0].error == "already checked in"
    else:
        assert _deliveries(engine)[0].error == "weekly target met"


def test_after_an_outage_old_reminders_are_missed_not_spammed(runtime, engine, redis_conn,
                                                             emu_client, alice):
    fresh = _habit(engine, alice, "Fresh")
    old = _habit(engine, alice, "Old", at=time(9))
    now = datetime.now(UTC)
    _make_due(engine, fresh, now - timedelta(minutes=50))
    _make_due(engine, old, now - timedelta(minutes=70))
    jobs._tick(runtime)
    _work(redis_conn)
    statuses = sorted(d.status for d in _deliveries(engine))
    assert statuses == ["missed", "sent"]
    assert len(emu_client.messages(ALICE, sender="bot")) == 1


def test_two_ticks_at_once_claim_each_schedule_once(runtime, engine, alice):
    habits = [_habit(engine, alice, f"h{n}") for n in range(3)]
    for h in habits:
        _make_due(engine, h, datetime.now(UTC) - timedelta(seconds=1))
    results: list[reminders.ClaimResult] = []
    threads = [threading.Thread(target=lambda: results.append(reminders.claim_due(engine)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r.pending_ids) for r in results) == 3
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ReminderDelivery)).scalar() == 3


def test_database_refuses_a_second_delivery_for_the_same_fire_time(engine, alice):
    habit = _habit(engine, alice)
    with engine.connect() as conn:
        schedule_id = conn.execute(select(HabitSchedule.id)).scalar_one()
    values = {"schedule_id": schedule_id, "habit_id": habit, "user_id": alice,
              "fire_at": datetime(2026, 1, 1, tzinfo=UTC)}
    from sqlalchemy.exc import IntegrityError

    with engine.begin() as conn:
        conn.execute(insert(ReminderDelivery).values(**values))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(ReminderDelivery).values(**values))


def test_worker_killed_mid_batch_is_resent_after_the_lease(runtime, engine, redis_conn,
                                                          emu_client, alice):
    habit = _habit(engine, alice)
    _make_due(engine, habit, datetime.now(UTC) - timedelta(seconds=5))
    result = reminders.claim_due(engine)
    # A worker took the delivery and died before sending: its lease runs out.
    assert reminders.start_delivery(engine, result.pending_ids[0]) is not None
    later = datetime.now(UTC) + reminders.LEASE + timedelta(seconds=1)
    again, missed = reminders.reap_expired(engine, now=later)
    assert again == [(result.pending_ids[0], 1)] and missed == 0
    jobs.send_batch([list(d) for d in again])
    assert [d.status for d in _deliveries(engine)] == ["sent"]
    assert len(emu_client.messages(ALICE, sender="bot")) == 1


def test_blocked_user_fails_the_delivery_and_is_marked(runtime, engine, redis_conn,
                                                       emu_client, alice):
    habit = _habit(engine, alice)
    emu_client.block(ALICE)
    _make_due(engine, habit, datetime.now(UTC) - timedelta(seconds=5))
    jobs._tick(runtime)
    _work(redis_conn)
    [(status, error, _)] = _deliveries(engine)
    assert status == "failed" and error.startswith("403")
    with engine.connect() as conn:
        assert conn.execute(select(User.is_blocked)).scalar_one() is True


def test_telegram_5xx_leaves_it_pending_for_the_reaper(runtime, engine, redis_conn,
                                                       emu_client, alice, monkeypatch):
    from habitbot.telegram import sender

    monkeypatch.setattr(sender, "MAX_TRANSIENT_ATTEMPTS", 1)
    habit = _habit(engine, alice)
    emu_client.add_fault("5xx", methods=["sendMessage"], count=1)
    _make_due(engine, habit, datetime.now(UTC) - timedelta(seconds=5))
    jobs._tick(runtime)
    _work(redis_conn)
    assert _deliveries(engine)[0].status == "pending"
    again, _ = reminders.reap_expired(engine, now=datetime.now(UTC) + timedelta(seconds=1))
    jobs.send_batch([list(d) for d in again])
    assert _deliveries(engine)[0].status == "sent"


def test_dst_gap_day_fires_exactly_once(runtime, engine, alice):
    with engine.begin() as conn:
        conn.execute(update(User).values(timezone="Europe/Berlin"))
    habit = _habit(engine, alice, at=time(2, 30))
    gap_fire = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 02:30 does not exist: 03:30 CEST
    _make_due(engine, habit, gap_fire)
    result = reminders.claim_due(engine, now=gap_fire + timedelta(seconds=10))
    assert len(result.pending_ids) == 1
    with engine.connect() as conn:
        next_fire = conn.execute(select(HabitSchedule.next_fire_at)).scalar_one()
    assert next_fire == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)  # 02:30 CEST next day
    assert reminders.claim_due(engine, now=gap_fire + timedelta(minutes=5)).claimed == 0


def test_user_changing_timezone_before_a_reminder_moves_it(runtime, engine, alice):
    from habitbot.services.users import set_timezone

    habit = _habit(engine, alice)
    set_timezone(engine, ALICE, "Asia/Tokyo")
    with engine.connect() as conn:
        next_fire = conn.execute(select(HabitSchedule.next_fire_at).where(
            HabitSchedule.habit_id == habit)).scalar_one()
    assert next_fire.astimezone(ZoneInfo("Asia/Tokyo")).time() == \
        time(8, 30)



def test_a_tick_that_dies_midway_commits_nothing_and_the_next_claims_all(runtime, engine,
                                                                        alice, monkeypatch):
    from habitbot.services import schedules

    for n in range(3):
        _make_due(engine, _habit(engine, alice, f"h{n}"), datetime.now(UTC) - timedelta(
            seconds=5))
    real = schedules.next_fire
    calls = {"n": 0}

    def dies_on_the_second(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("server closed the connection unexpectedly")
        return real(*args)

    monkeypatch.setattr(schedules, "next_fire", dies_on_the_second)
    with pytest.raises(ConnectionError):
        reminders.claim_due(engine)
    assert _deliveries(engine) == []  # nothing half-done
    monkeypatch.setattr(schedules, "next_fire", real)
    assert len(reminders.claim_due(engine).pending_ids) == 3


def test_redis_lost_mid_burst_loses_no_reminder(runtime, engine, redis_conn, emu_client,
                                                alice):
    for n in range(3):
        _make_due(engine, _habit(engine, alice, f"h{n}"), datetime.now(UTC) - timedelta(
            seconds=5))
    jobs._tick(runtime)
    redis_conn.flushdb()  # the queued send jobs are gone with Redis
    _work(redis_conn)
    assert {d.status for d in _deliveries(engine)} == {"pending"}
    again, missed = reminders.reap_expired(
        engine, now=datetime.now(UTC) + reminders.LEASE + timedelta(seconds=1))
    assert len(again) == 3 and missed == 0
    jobs._enqueue(runtime, again)
    _work(redis_conn)
    assert [d.status for d in _deliveries(engine)] == ["sent"] * 3
    assert len(emu_client.messages(ALICE, sender="bot")) == 3


def test_429_storm_delays_but_loses_and_doubles_nothing(runtime, engine, redis_conn,
                                                        emu_client, alice):
    for n in range(3):
        _make_due(engine, _habit(engine, alice, f"h{n}"), datetime.now(UTC) - timedelta(
            seconds=5))
    emu_client.add_fault("429", methods=["sendMessage"], count=4, retry_after=1)
    jobs._tick(runtime)
    _work(redis_conn)
    assert [d.status for d in _deliveries(engine)] == ["sent"] * 3
    assert len(emu_client.messages(ALICE, sender="bot")) == 3
    assert emu_client.stats()["rate_limited"] == 4


def test_paid_broadcast_mode_marks_reminders(runtime, engine, redis_conn, emu_client, alice,
                                             monkeypatch):
    import dataclasses

    monkeypatch.setattr(runtime, "settings",
                        dataclasses.replace(runtime.settings, telegram_paid_broadcast=True))
    _make_due(engine, _habit(engine, alice), datetime.now(UTC) - timedelta(seconds=5))
    jobs._tick(runtime)
    _work(redis_conn)
    [message] = emu_client.messages(ALICE, sender="bot")
    assert message["paid_broadcast"] is True


def test_a_reaped_copy_and_the_original_never_both_send(runtime, engine, emu_client, alice):
    _make_due(engine, _habit(engine, alice), datetime.now(UTC) - timedelta(seconds=5))
    original = reminders.claim_due(engine).dispatches
    # The queue was slow: the lease ran out before any worker took the delivery.
    copy, _ = reminders.reap_expired(
        engine, now=datetime.now(UTC) + reminders.LEASE + timedelta(seconds=1))
    assert copy == original  # same hand-out generation
    assert jobs.send_batch([list(d) for d in original]) == 1
    assert jobs.send_batch([list(d) for d in copy]) == 0
    assert len(emu_client.messages(ALICE, sender="bot")) == 1


def test_a_stale_generation_cannot_start_a_delivery_someone_else_started(engine, alice):
    _make_due(engine, _habit(engine, alice), datetime.now(UTC) - timedelta(seconds=5))
    [(delivery_id, attempts)] = reminders.claim_due(engine).dispatches
    assert reminders.start_delivery(engine, delivery_id, attempts) is not None
    assert reminders.start_delivery(engine, delivery_id, attempts) is None


def test_leases_cover_the_expected_wait_in_the_queue(engine, alice):
    for n in range(3):
        _make_due(engine, _habit(engine, alice, f"h{n}"), datetime.now(UTC) - timedelta(
            seconds=5))
    now = datetime.now(UTC)
    reminders.claim_due(engine, now=now, send_rate=1.0, queued_before=100)
    with engine.connect() as conn:
        leases = conn.execute(select(ReminderDelivery.lease_until)
                              .order_by(ReminderDelivery.lease_until)).scalars().all()
    assert [(lease - now - reminders.LEASE).total_seconds() for lease in leases] == [
        100.0, 101.0, 102.0]


def test_a_chunk_is_started_together_skipping_and_keeping_its_order(engine, emu_client, alice):
    with engine.begin() as conn:  # four habits: premium
        conn.execute(update(User).where(User.id == alice).values(
            tier="premium", premium_ends_at=datetime.now(UTC) + timedelta(days=30)))
    habit_ids = [_habit(engine, alice, f"h{n}") for n in range(4)]
    for habit_id in habit_ids:
        _make_due(engine, habit_id, datetime.now(UTC) - timedelta(seconds=5))
    dispatches = dict(reminders.claim_due(engine).dispatches)
    with engine.connect() as conn:
        by_habit = {r.habit_id: (r.id, dispatches[r.id]) for r in conn.execute(
            select(ReminderDelivery.id, ReminderDelivery.habit_id))}
    # Checked in meanwhile: skipped at start. Already started by a reaped copy: left out.
    svc.check_in(engine, alice, habit_ids[1], datetime.now(UTC).date())
    reminders.start_delivery(engine, *by_habit[habit_ids[2]])
    order = [by_habit[habit_ids[3]], by_habit[habit_ids[0]], by_habit[habit_ids[1]],
             by_habit[habit_ids[2]]]
    with engine.connect() as conn:
        jobs_started = reminders.start_deliveries(conn, order)
    assert [j.habit_id for j in jobs_started] == [habit_ids[3], habit_ids[0]]
    statuses = dict(_deliveries_by_habit(engine))
    assert statuses[habit_ids[1]] == ("skipped", "already checked in")
    assert statuses[habit_ids[2]][0] == "pending"


def _deliveries_by_habit(engine):
    with engine.connect() as conn:
        return [(r.habit_id, (r.status, r.error)) for r in conn.execute(
            select(ReminderDelivery.habit_id, ReminderDelivery.status, ReminderDelivery.error))]


def test_an_autocommit_connection_serves_marks_but_not_a_chunk_start(engine, alice):
    _make_due(engine, _habit(engine, alice), datetime.now(UTC) - timedelta(seconds=5))
    [dispatch] = reminders.claim_due(engine).dispatches
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as marks:
        with pytest.raises(ValueError, match="transaction"):
            reminders.start_deliveries(marks, [dispatch])
        assert reminders.start_delivery(engine, *dispatch) is not None
        assert reminders.finish_delivery(marks, dispatch[0], "sent", message_id=77) is True
        assert reminders.finish_delivery(marks, dispatch[0], "sent", message_id=78) is False
    assert _deliveries(engine) == [("sent", None, 77)]


def test_telegram_unreachable_hands_the_batch_back_and_alerts_once(runtime, engine, redis_conn,
                                                                   emu_client, monkeypatch):
    """An outage: after GIVE_UP_AFTER sends in a row fail, the rest of the batch goes back to
    the reaper at once (the worker is free for the minute tick), and one CRITICAL alert says
    why. When Telegram is back, the reaper's hand-out sends every reminder once."""
    from habitbot.models import AdminAlert
    from habitbot.telegram import sender

    monkeypatch.setattr(sender, "MAX_TRANSIENT_ATTEMPTS", 2)
    monkeypatch.setattr(runtime.sender, "_sleep", lambda seconds: None)
    with engine.begin() as conn:
        users = conn.execute(insert(User).values([
            {"telegram_id": 7200 + n, "timezone": "UTC", "language": "en"} for n in range(8)])
            .returning(User.id)).scalars().all()
    for n, user_id in enumerate(users):
        emu_client.add_user(7200 + n, first_name=f"U{n}")
        _make_due(engine, _habit(engine, user_id), datetime.now(UTC) - timedelta(seconds=5))
    dispatches = reminders.claim_due(engine).dispatches
    emu_client.add_fault("outage", methods=["sendMessage"])
    assert jobs.send_batch([list(d) for d in dispatches]) == 0
    # Three reminders tried (the other five never were), and the alert tried once itself.
    assert emu_client.stats()["requests"].get("sendMessage", 0) == \
        (jobs.GIVE_UP_AFTER + 1) * sender.MAX_TRANSIENT_ATTEMPTS
    assert {d.status for d in _deliveries(engine)} == {"pending"}
    with engine.connect() as conn:
        alerts = conn.execute(select(AdminAlert.message).where(
            AdminAlert.fingerprint == "telegram_unreachable",
            AdminAlert.status != "suppressed")).scalars().all()  # every give-up is recorded
    assert len(alerts) == 1 and "Bot API unreachable" in alerts[0]

    emu_client.clear_faults()
    again, missed = reminders.reap_expired(engine, now=datetime.now(UTC) + timedelta(seconds=1))
    assert len(again) == 8 and missed == 0
    assert jobs.send_batch([list(d) for d in again]) == 8
    assert all(len(emu_client.messages(7200 + n, sender="bot")) == 1 for n in range(8))


def test_a_batch_keeps_the_reaper_off_what_it_still_holds(runtime, engine, emu_client, alice,
                                                          monkeypatch):
    """A slow batch (a 429 pause) renews the leases of the deliveries it has started and not
    yet sent, so the reaper does not hand out a copy beside it."""
    _make_due(engine, _habit(engine, alice), datetime.now(UTC) - timedelta(seconds=5))
    [dispatch] = reminders.claim_due(engine).dispatches
    started = datetime.now(UTC)
    reminders.start_delivery(engine, *dispatch, now=started)
    later = started + reminders.LEASE - timedelta(seconds=1)
    reminders.renew_leases(engine, [dispatch[0]], now=later)
    assert reminders.reap_expired(engine, now=started + reminders.LEASE + timedelta(seconds=1)
                                  ) == ([], 0)
    with engine.connect() as conn:
        lease = conn.execute(select(ReminderDelivery.lease_until)).scalar_one()
    assert lease == later + reminders.LEASE
    # In a batch: with renewals before every send, everything is still sent once.
    install(replace(runtime, settings=replace(runtime.settings, reminder_lease_renew=-1.0)),
            monkeypatch)
    assert jobs.send_batch([[dispatch[0], dispatch[1] + 1]]) == 1
    assert len(emu_client.messages(ALICE, sender="bot")) == 1


# -- one user's burst must not hold the batch ------------------------------------------------

HEAVY = 7300
LIGHT = range(7400, 7450)


@pytest.fixture
def slow_chats(runtime, monkeypatch):
    """Telegram's real per-chat pace (10/s here rather than 1/s, to keep the test short; the
    global rate stays high): a chat's second reminder in a row waits for its slot."""
    rt = build_runtime("worker", "worker", configure_logging=False,
                       settings=replace(runtime.settings, telegram_chat_rate=10.0))
    yield install(rt, monkeypatch)
    rt.close()


@pytest.fixture
def heavy_and_light(engine, emu_client):
    """One premium user with 20 habits due at 08:00 (created first, so claimed first), and 50
    users with one each, all due in the same minute."""
    due = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    heavy = _user(engine, HEAVY, tier="premium",
                  premium_ends_at=datetime.now(UTC) + timedelta(days=30))
    habits = [_habit(engine, heavy, f"h{n}", at=time(8, 0)) for n in range(20)]
    for chat in LIGHT:
        habits.append(_habit(engine, _user(engine, chat), at=time(8, 0)))
    for chat in (HEAVY, *LIGHT):
        emu_client.add_user(chat, first_name=f"U{chat}", language_code="en")
    with engine.begin() as conn:
        conn.execute(update(HabitSchedule).where(HabitSchedule.habit_id.in_(habits))
                     .values(next_fire_at=due))
    return habits


def _send_order(emu_client) -> list[int]:
    chats = {HEAVY, *LIGHT}
    return [s["chat_id"] for s in emu_client.sends() if s["chat_id"] in chats
            and s["method"] == "sendMessage"]


def test_a_users_second_reminder_goes_after_every_other_users_first(
        slow_chats, engine, redis_conn, emu_client, heavy_and_light):
    """The tick hands a batch out chat by chat: the heavy user's first reminder, everyone
    else's, then the heavy user's other 19 — nobody waits behind their 1/s."""
    jobs._tick(slow_chats)
    _work(redis_conn)
    order = _send_order(emu_client)
    assert len(order) == 70 and order.count(HEAVY) == 20
    assert order[:51].count(HEAVY) == 1 and set(order[:51]) == {HEAVY, *LIGHT}
    assert order[51:] == [HEAVY] * 19
    assert {d.status for d in _deliveries(engine)} == {"sent"}


def test_a_chat_waiting_for_its_slot_does_not_hold_the_batch(
        slow_chats, engine, emu_client, heavy_and_light):
    """Handed a batch with the heavy user's 20 reminders first, the batch sends what the
    chat's burst allows, then serves the 50 others while that chat waits for its slot, and
    sends the rest of the heavy user's on their own pace — each once, leases kept."""
    dispatches = reminders.claim_due(engine).dispatches
    with engine.connect() as conn:
        heavy_first = conn.execute(
            select(ReminderDelivery.id).join(User, User.id == ReminderDelivery.user_id)
            .order_by(User.telegram_id != HEAVY, ReminderDelivery.id)).scalars().all()
    attempts = dict(dispatches)
    assert jobs.send_batch([[d, attempts[d]] for d in heavy_first]) == 70
    order = _send_order(emu_client)
    light_done = max(i for i, chat in enumerate(order) if chat != HEAVY)
    assert order.count(HEAVY) == 20
    assert order[:light_done + 1].count(HEAVY) <= 2  # the chat's burst: two at once
    with engine.connect() as conn:
        rows = conn.execute(select(ReminderDelivery.status, ReminderDelivery.attempts,
                                   ReminderDelivery.lease_until)).all()
    assert {(r.status, r.attempts, r.lease_until) for r in rows} == {("sent", 1, None)}
    assert all(len(emu_client.messages(chat, sender="bot")) == 1 for chat in LIGHT)


# -- timing from the settings --------------------------------------------------------------

def test_the_tick_is_registered_with_its_interval_on_its_boundaries(runtime, redis_conn):
    from workers.scheduler import (
        build_scheduler,
        loop_interval,
        next_boundary,
        periodic_jobs,
        register_periodic_jobs,
    )

    at = datetime(2026, 3, 1, 8, 0, 7, 500000, tzinfo=UTC)
    assert next_boundary(at, 60) == datetime(2026, 3, 1, 8, 1, tzinfo=UTC)
    assert next_boundary(at, 5) == datetime(2026, 3, 1, 8, 0, 10, tzinfo=UTC)
    assert next_boundary(at.replace(second=10, microsecond=0), 5) == at.replace(
        second=15, microsecond=0)
    production = periodic_jobs(runtime.settings)
    assert loop_interval(production) == 5
    shrunk = periodic_jobs(replace(runtime.settings, reminder_tick_interval=2,
                                   cleanup_interval=30))
    intervals = {job.name: job.interval for job in shrunk}
    assert intervals["habit_reminders"] == 2 and intervals["cleanup"] == 30
    assert loop_interval(shrunk) == 2
    scheduler = build_scheduler(runtime, loop_interval(shrunk))
    register_periodic_jobs(scheduler, shrunk)
    [(job, when)] = [(j, t) for j, t in scheduler.get_jobs(with_times=True)
                     if j.id == "periodic-habit_reminders"]
    assert job.meta["interval"] == 2 and when.timestamp() % 2 == 0


def test_a_shrunk_tick_sends_a_reminder_due_in_its_minute_once(runtime, engine, redis_conn,
                                                              emu_client, alice):
    """Due selection is by the minute: ticks every few seconds within that minute claim the
    reminder once (the claim moves the schedule to its next day)."""
    habit = _habit(engine, alice)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    _make_due(engine, habit, minute)
    for second in (0, 2, 4, 30, 58):
        reminders.claim_due(engine, now=minute + timedelta(seconds=second))
    quick = replace(runtime, settings=replace(runtime.settings, reminder_tick_interval=2,
                                              reminder_tick_budget=1.0))
    assert jobs._tick(quick) == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ReminderDelivery)).scalar_one() == 1


def test_the_lease_is_the_one_the_settings_choose(runtime, engine, alice, monkeypatch):
    _make_due(engine, _habit(engine, alice), datetime.now(UTC) - timedelta(seconds=5))
    short = install(replace(runtime, settings=replace(runtime.settings, reminder_lease=6)),
                    monkeypatch)
    before = datetime.now(UTC)
    assert jobs._tick(short) == 1
    with engine.connect() as conn:
        lease = conn.execute(select(ReminderDelivery.lease_until)).scalar_one()
    assert timedelta(seconds=6) <= lease - before < timedelta(seconds=6.5)
    assert reminders.reap_expired(engine, now=before + timedelta(seconds=7),
                                  lease=timedelta(seconds=6))[0] != []
