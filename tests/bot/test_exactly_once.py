"""Every update handled exactly once through a clean stop, a crash and a restart: confirmed to
Telegram only once handled, and never handled twice when Telegram delivers it again. Real bot
code, PostgreSQL and Redis; Telegram is the emulator, which keeps an update until a getUpdates
confirms it, as Telegram does."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, update

from habitbot import metrics
from habitbot.bot import intake
from habitbot.bot.app import PollingBot
from habitbot.models import Habit, ProcessedUpdate, Subscription, User
from habitbot.services import billing
from tests.bot.conftest import Chat, onboard
from tests.bot.test_premium_stars import order_month, pre_checkout
from tests.conftest import TEST_TOKEN
from workers import maintenance

ALICE = 5101
BOB = 5102


@pytest.fixture
def people(emu_client, engine):
    """Alice and Bob, both past onboarding, writing in English."""
    onboard(emu_client, engine, {ALICE: "Alice", BOB: "Bob"})


@pytest.fixture
def bots(runtime):
    """Bot processes one after another on the same database and Redis ("restarts")."""
    started: list[PollingBot] = []

    def start() -> PollingBot:
        started.append(PollingBot(runtime, poll_timeout=1))
        return started[-1]

    yield start
    for bot in started:
        bot.executor.shutdown(timeout=30)


def crashed(bot: PollingBot, monkeypatch) -> PollingBot:
    """A bot that fetches updates and dies before handling any: nothing it queues runs."""
    monkeypatch.setattr(bot.executor, "submit", lambda *args, **kwargs: True)
    return bot


def unconfirmed(emu_client) -> list[int]:
    """Update ids Telegram still holds (a getUpdates without an offset confirms nothing)."""
    answer = emu_client.bot_call("getUpdates", token=TEST_TOKEN, timeout=0)
    return [u["update_id"] for u in answer["result"]]


def handle_all(bot: PollingBot) -> None:
    bot.poll_once()
    assert bot.executor.drain(timeout=30)


def habits(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(Habit.name).order_by(Habit.id)).scalars())


def bot_texts(emu_client, user: int) -> list[str]:
    return [m.get("text") or "" for m in emu_client.messages(user, sender="bot")]


def test_a_clean_stop_confirms_what_it_handled_so_a_restart_does_not_repeat_it(
        bots, emu_client, engine, people, monkeypatch):
    first = bots()
    queue = first.executor.submit

    def stop_requested_meanwhile(*args, **kwargs):
        """SIGTERM arrives while the update is being handled."""
        queued = queue(*args, **kwargs)
        first.stop()
        return queued

    monkeypatch.setattr(first.executor, "submit", stop_requested_meanwhile)
    running = threading.Thread(target=first.run, name="bot-before-restart")
    running.start()
    emu_client.inject_message(ALICE, "/new Read")
    running.join(60)
    assert not running.is_alive()
    assert habits(engine) == ["Read"]  # handled before the process ended
    assert unconfirmed(emu_client) == []

    handle_all(bots())  # the restarted bot
    assert habits(engine) == ["Read"]
    assert sum("New habit: Read" in t for t in bot_texts(emu_client, ALICE)) == 1


def test_an_update_handled_but_not_confirmed_before_a_crash_is_not_handled_again(
        bots, emu_client, engine, people, redis_conn):
    before = bots()
    emu_client.inject_message(ALICE, "/new Read")
    handle_all(before)  # handled; the process dies before its next getUpdates
    assert len(unconfirmed(emu_client)) == 1

    after = bots()
    handle_all(after)
    assert habits(engine) == ["Read"]
    assert sum("New habit: Read" in t for t in bot_texts(emu_client, ALICE)) == 1
    after.poll_once()
    assert unconfirmed(emu_client) == []
    assert metrics.stored(redis_conn)['habitbot_updates_dropped_total{reason="duplicate"}'] == 1


def test_updates_fetched_but_not_handled_before_a_crash_are_delivered_again_and_handled_once(
        bots, emu_client, engine, people, monkeypatch):
    dead = crashed(bots(), monkeypatch)
    emu_client.inject_message(ALICE, "/new Read")
    dead.poll_once()
    emu_client.inject_message(BOB, "/new Run")
    dead.poll_once()  # a later poll must not confirm what is still in hand
    assert len(unconfirmed(emu_client)) == 2

    after = bots()
    handle_all(after)
    handle_all(after)
    assert sorted(habits(engine)) == ["Read", "Run"]
    assert unconfirmed(emu_client) == []


def claimed_by_the_dead(engine, bot: PollingBot, update_id: int, kind: str) -> None:
    """The record a bot leaves when it dies inside the handler."""
    with engine.begin() as conn:
        conn.execute(insert(ProcessedUpdate).values(
            bot_id=bot.intake.bot_id, update_id=update_id, kind=kind, status="handling"))


@pytest.mark.parametrize("died", ["before handling", "inside the handler"])
def test_a_stars_payment_fetched_before_a_crash_is_credited_once_after_the_restart(
        bots, emu_client, engine, monkeypatch, died):
    before = bots()
    emu_client.add_user(ALICE, first_name="Alice", language_code="en")
    chat = Chat(emu_client, before, ALICE)
    chat.say("/help")
    with engine.begin() as conn:
        user_id = conn.execute(update(User).where(User.telegram_id == ALICE).values(
            onboarded_at=User.created_at).returning(User.id)).scalar_one()
    invoice, _ = order_month(chat, engine)
    answer = pre_checkout(chat, invoice)
    assert answer["ok"]
    before.poll_once()  # confirms the pre-checkout query

    dead = crashed(bots(), monkeypatch)
    paid = emu_client.pay(ALICE, invoice_message_id=invoice["message_id"],
                          pre_checkout_query_id=answer["pre_checkout_query_id"])
    [payment_update] = unconfirmed(emu_client)
    dead.poll_once()
    emu_client.inject_message(ALICE, "/help")
    dead.poll_once()
    assert billing.status(engine, user_id).tier != "premium"
    if died == "inside the handler":  # crediting is idempotent: it runs again
        claimed_by_the_dead(engine, dead, payment_update, "successful_payment")

    after = bots()
    handle_all(after)
    handle_all(after)
    assert billing.status(engine, user_id).tier == "premium"
    emu_client.replay_payment(ALICE, paid["telegram_payment_charge_id"])
    handle_all(after)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Subscription)).scalar_one() == 1
    assert sum("received" in t for t in bot_texts(emu_client, ALICE)) == 1


def test_an_update_interrupted_inside_its_handler_is_not_run_again(
        bots, emu_client, engine, people, caplog):
    """A crash between the claim and the end of the handler: the handler may have done its
    work, so an ordinary update is not run again."""
    caplog.set_level(logging.WARNING)
    bot = bots()
    emu_client.inject_message(ALICE, "/new Read")
    [update_id] = unconfirmed(emu_client)
    claimed_by_the_dead(engine, bot, update_id, "message")
    handle_all(bot)
    assert habits(engine) == []
    assert bot_texts(emu_client, ALICE) == []
    assert "update interrupted by a stop: not handled again" in caplog.messages
    bot.poll_once()
    assert unconfirmed(emu_client) == []


def test_the_database_down_neither_loses_nor_repeats_updates(
        emu_client, pg_proxy, database_url, redis_url, emulator, engine, people, monkeypatch):
    from habitbot.config import load_settings
    from habitbot.runtime import build_runtime
    from tests.conftest import make_env

    env = make_env(pg_proxy.url_for(database_url), redis_url, emulator.url,
                   DB_CONNECT_TIMEOUT="1")
    rt = build_runtime("bot", "bot", settings=load_settings(env), configure_logging=False)
    bot = PollingBot(rt, poll_timeout=1)
    try:
        pg_proxy.set_mode("refuse")
        emu_client.inject_message(BOB, "/help")
        emu_client.inject_message(BOB, "/today")
        handle_all(bot)
        assert len(bot_texts(emu_client, BOB)) == 2  # answered in the limited mode
        bot.poll_once()
        assert unconfirmed(emu_client) == []  # confirmed: nothing comes back to spin on
        pg_proxy.set_mode("pass")
        monkeypatch.setattr(intake, "CLAIM_RETRY_SECONDS", 0.0)
        bot.intake._claims_off_until = 0.0
        emu_client.inject_message(BOB, "/help")
        handle_all(bot)
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(
                ProcessedUpdate)).scalar_one() == 1
    finally:
        bot.executor.shutdown()
        rt.close()


def test_records_older_than_a_week_are_pruned_by_the_maintenance_job(runtime, engine):
    old = datetime.now(UTC) - timedelta(days=8)
    with engine.begin() as conn:
        conn.execute(insert(ProcessedUpdate), [
            {"bot_id": 1, "update_id": 1, "kind": "message", "status": "handled",
             "claimed_at": old},
            {"bot_id": 1, "update_id": 2, "kind": "message", "status": "handled",
             "claimed_at": datetime.now(UTC)}])
    assert maintenance._cleanup(runtime) == 1
    with engine.connect() as conn:
        assert list(conn.execute(select(ProcessedUpdate.update_id)).scalars()) == [2]
