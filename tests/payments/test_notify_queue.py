"""The queue of payment notices that webhooks fill and workers drain: each notice is sent once,
a burst schedules one drain job, nothing is lost when Telegram fails or a drain is killed
mid-send, and a notice queued while a drain lets go is not left behind."""

from __future__ import annotations

import multiprocessing
import time

from rq import Queue

from habitbot.payments import notify
from habitbot.runtime import build_runtime
from habitbot.services import billing
from tests.payments.support import ALICE_TG, add_user, bot_texts, paid_top_up, run_jobs
from tests.support.polling import wait_until
from workers import notices, queues


def _drain_jobs(runtime) -> int:
    return Queue(queues.HIGH, connection=runtime.redis).count


def _no_sleep(runtime, monkeypatch) -> None:
    monkeypatch.setattr(runtime.sender, "_sleep", lambda seconds: None)



def test_a_queued_notice_is_sent_once_by_the_drain_job(runtime, alice, emu_client):
    payment_id = paid_top_up(runtime.engine, alice)
    notify.enqueue_completion_notice(runtime, payment_id)
    assert bot_texts(emu_client, ALICE_TG) == []
    assert (notify.pending(runtime.redis), _drain_jobs(runtime)) == (1, 1)
    run_jobs(runtime)
    notices.sweep_payment_notices()
    run_jobs(runtime)
    assert bot_texts(emu_client, ALICE_TG) == [
        "✅ Payment received: 50.00 ₽ added to your balance.\nBalance: 50.00 ₽."]
    assert notify.pending(runtime.redis) == 0


def test_a_burst_of_notices_schedules_one_drain_job(runtime, engine, emu_client):
    payers = [(7100 + i, add_user(engine, emu_client, 7100 + i)) for i in range(12)]
    for _, user_id in payers:
        notify.enqueue_completion_notice(runtime, paid_top_up(engine, user_id))
    assert (notify.pending(runtime.redis), _drain_jobs(runtime)) == (12, 1)
    run_jobs(runtime)
    assert [len(bot_texts(emu_client, tg)) for tg, _ in payers] == [1] * 12
    assert notify.pending(runtime.redis) == 0


def test_a_notice_queued_while_a_drain_lets_go_is_not_left_behind(runtime, engine, alice,
                                                                  emu_client, monkeypatch):
    first, late = paid_top_up(engine, alice), paid_top_up(engine, alice)
    notify.enqueue_completion_notice(runtime, first)
    run_through = notify._send_queued

    def queue_one_more_at_the_end(*args):
        out_of_time = run_through(*args)
        if late is not None:
            # The drain has found the queue empty and still holds the lock: a webhook's
            # notice now schedules no job, so the drain itself must pick it up.
            notify.enqueue_completion_notice(runtime, late)
            assert _drain_jobs(runtime) == 1  # only the first notice's
            monkeypatch.setattr(notify, "_send_queued", run_through)
        return out_of_time

    monkeypatch.setattr(notify, "_send_queued", queue_one_more_at_the_end)
    done = notify.drain(runtime)
    assert (done.sent, notify.pending(runtime.redis)) == (2, 0)
    assert len(bot_texts(emu_client, ALICE_TG)) == 2


def test_telegram_failing_keeps_the_notice_until_it_answers(runtime, alice, emu_client,
                                                            monkeypatch):
    _no_sleep(runtime, monkeypatch)
    payment_id = paid_top_up(runtime.engine, alice)
    emu_client.add_fault("5xx", methods=["sendMessage"], count=100)
    notify.enqueue_completion_notice(runtime, payment_id)
    run_jobs(runtime)
    assert bot_texts(emu_client, ALICE_TG) == []
    assert notify.pending(runtime.redis) == 1
    emu_client.clear_faults()
    notices.sweep_payment_notices()  # the periodic sweep
    run_jobs(runtime)
    assert len(bot_texts(emu_client, ALICE_TG)) == 1
    assert notify.pending(runtime.redis) == 0


def test_a_failing_notice_does_not_hold_up_the_ones_behind_it(runtime, engine, alice,
                                                              emu_client, monkeypatch):
    _no_sleep(runtime, monkeypatch)
    bob_tg = 7002
    bob = add_user(engine, emu_client, bob_tg)
    emu_client.add_fault("5xx", methods=["sendMessage"], count=5)  # the sender's retries
    notify.enqueue_completion_notice(runtime, paid_top_up(engine, alice))
    notify.enqueue_completion_notice(runtime, paid_top_up(engine, bob))
    assert notify.drain(runtime).stalled
    assert notify.drain(runtime).sent == 2  # Bob's first, then Alice's again
    assert [len(bot_texts(emu_client, tg)) for tg in (ALICE_TG, bob_tg)] == [1, 1]


def test_a_user_who_blocked_the_bot_is_dropped_not_retried(runtime, alice, emu_client):
    emu_client.block(ALICE_TG)
    notify.enqueue_completion_notice(runtime, paid_top_up(runtime.engine, alice))
    done = notify.drain(runtime)
    assert (done.sent, done.dropped, done.stalled) == (0, 1, False)
    assert notify.pending(runtime.redis) == 0


def test_a_notice_failing_for_a_day_is_given_up(runtime, alice, emu_client, monkeypatch):
    _no_sleep(runtime, monkeypatch)
    payment_id = paid_top_up(runtime.engine, alice)
    emu_client.add_fault("5xx", methods=["sendMessage"], count=100)
    two_days_ago = int(time.time()) - 2 * 24 * 3600
    notify._push(runtime.redis, f"payment:{payment_id}:{two_days_ago}")
    done = notify.drain(runtime)
    assert (done.dropped, done.stalled, notify.pending(runtime.redis)) == (1, False, 0)


def test_pending_and_unknown_payments_are_dropped(runtime, alice, emu_client):
    pending_id, _ = billing.create_payment(runtime.engine, alice, "yookassa", "balance_topup",
                                           100, "RUB")
    notify.enqueue_completion_notice(runtime, pending_id)
    notify.enqueue_refund_notice(runtime, 424242)
    runtime.redis.lpush(notify.QUEUE_KEY, "garbage")
    done = notify.drain(runtime)
    assert (done.sent, done.dropped, notify.pending(runtime.redis)) == (0, 3, 0)
    assert bot_texts(emu_client, ALICE_TG) == []


def test_a_drain_job_that_could_not_be_scheduled_is_scheduled_by_the_next_notice(
        runtime, alice, emu_client, monkeypatch):
    schedule = notify._schedule_drain

    def refused(conn):
        monkeypatch.setattr(notify, "_schedule_drain", schedule)
        raise RuntimeError("queue refused")

    monkeypatch.setattr(notify, "_schedule_drain", refused)
    notify.enqueue_completion_notice(runtime, paid_top_up(runtime.engine, alice))
    assert (notify.pending(runtime.redis), _drain_jobs(runtime)) == (1, 0)
    notify.enqueue_completion_notice(runtime, paid_top_up(runtime.engine, alice))
    assert _drain_jobs(runtime) == 1
    run_jobs(runtime)
    assert len(bot_texts(emu_client, ALICE_TG)) == 2


def test_a_sweep_sends_what_no_drain_job_was_scheduled_for(runtime, alice, emu_client):
    payment_id = paid_top_up(runtime.engine, alice)
    runtime.redis.lpush(notify.QUEUE_KEY, f"payment:{payment_id}:{int(time.time())}")
    assert notices.sweep_payment_notices() == 1
    assert len(bot_texts(emu_client, ALICE_TG)) == 1


def test_a_drain_hands_over_to_a_new_job_when_its_time_is_up(runtime, engine, alice,
                                                             emu_client):
    for _ in range(2):
        notify.enqueue_completion_notice(runtime, paid_top_up(engine, alice))
    Queue(queues.HIGH, connection=runtime.redis).empty()
    ticks = iter([0.0, 0.0])  # the deadline, then one notice's turn; after it the time is up
    done = notify.drain(runtime, budget=1.0, clock=lambda: next(ticks, 100.0))
    assert (done.sent, notify.pending(runtime.redis), _drain_jobs(runtime)) == (1, 1, 1)
    run_jobs(runtime)
    assert (len(bot_texts(emu_client, ALICE_TG)), notify.pending(runtime.redis)) == (2, 0)


def _drain_in_a_child(settings) -> None:
    notify.drain(build_runtime("worker", "worker", settings=settings, configure_logging=False))


def test_a_drain_killed_mid_send_is_resumed_and_sends_once(runtime, alice, emu_client,
                                                           pay_settings):
    payment_id = paid_top_up(runtime.engine, alice)
    notify.enqueue_completion_notice(runtime, payment_id)
    emu_client.add_fault("timeout", methods=["sendMessage"])  # the send hangs
    child = multiprocessing.get_context("spawn").Process(target=_drain_in_a_child,
                                                         args=(pay_settings,))
    child.start()
    try:
        wait_until(lambda: runtime.redis.llen(notify.INFLIGHT_KEY) == 1, 20.0, "the send in flight")
        wait_until(lambda: emu_client.faults()[0]["hits"] >= 1, 20.0, "Telegram holding the send")
    finally:
        child.kill()
        child.join(10)
    emu_client.clear_faults()
    assert notify.drain(runtime).sent == 0  # its lock still stands: nothing happens
    runtime.redis.pexpire(notify.LOCK_KEY, 1)  # as when LOCK_TTL runs out
    wait_until(lambda: not runtime.redis.exists(notify.LOCK_KEY), 20.0, "the lock to expire")
    assert notify.drain(runtime).sent == 1
    assert len(bot_texts(emu_client, ALICE_TG)) == 1
    assert notify.pending(runtime.redis) == 0


def test_a_notice_job_of_the_former_queue_still_runs(runtime, alice, emu_client):
    payment_id = paid_top_up(runtime.engine, alice)
    Queue(queues.HIGH, connection=runtime.redis).enqueue(notify.notify_completion_job,
                                                         payment_id)
    run_jobs(runtime)
    assert len(bot_texts(emu_client, ALICE_TG)) == 1
