"""Replies the bot could not send because Telegram was unreachable: kept, delivered once
Telegram answers again — once, in order, without running the handler again — and never at the
cost of other chats. Real bot code, PostgreSQL and Redis; Telegram is the emulator with its
faults."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import func, select
from telebot.apihelper import ApiTelegramException

from habitbot.bot.app import PollingBot
from habitbot.models import Habit
from habitbot.telegram.deferred import MAX_AGE_SECONDS
from tests.bot.conftest import onboard
from tests.support.polling import wait_until

ALICE = 4101
BOB = 4102
KEPT = "reply deferred until Telegram answers again"
GAVE_UP = "telegram call failed after retries"  # what the runbook tells operators to look for


@pytest.fixture
def people(emu_client, engine):
    """Alice and Bob, both past onboarding, writing in English."""
    onboard(emu_client, engine, {ALICE: "Alice", BOB: "Bob"})


@pytest.fixture
def quick_retries(runtime, monkeypatch):
    """The sender's backoff between retries without the waiting."""
    monkeypatch.setattr(runtime.sender, "_sleep", lambda seconds: None)


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def write(emu_client, bot: PollingBot, user: int, text: str) -> int:
    """The user writes; the bot fetches and handles it. Returns the message id."""
    sent = emu_client.inject_message(user, text)
    bot.poll_once()
    assert bot.executor.drain(timeout=60)
    return int(sent["message_id"])


def answers(emu_client, user: int, after: int) -> list[str]:
    return [m.get("text") or m.get("caption") or "" for m in
            emu_client.messages(user, sender="bot") if m["message_id"] > after]


def habits(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Habit)).scalar_one()


@pytest.mark.parametrize("mode", ["outage", "5xx"])
def test_a_reply_during_an_outage_is_delivered_once_when_telegram_is_back(
        bot, emu_client, engine, people, quick_retries, logs, mode):
    emu_client.add_fault(mode, methods=["sendMessage"])
    asked = write(emu_client, bot, ALICE, "/new Read daily 08:30")
    assert habits(engine) == 1  # the handler did its work
    assert answers(emu_client, ALICE, asked) == []
    assert bot.replies.waiting() == 1
    assert GAVE_UP in logs.messages and KEPT in logs.messages
    assert "could not send the apology" not in logs.messages

    still_down = bot.replies.drain_once()
    assert still_down.stalled and still_down.delivered == 0
    assert bot.replies.waiting() == 1

    emu_client.clear_faults()
    assert bot.replies.drain_once().delivered == 1
    assert bot.replies.drain_once().delivered == 0
    [reply] = answers(emu_client, ALICE, asked)
    assert "New habit: Read" in reply
    assert habits(engine) == 1  # not run again
    assert "deferred replies delivered: 1" in logs.messages


def test_while_telegram_is_unreachable_other_chats_replies_are_kept_at_once(
        bot, emu_client, people, quick_retries):
    emu_client.add_fault("outage", methods=["sendMessage"])
    alice_asked = write(emu_client, bot, ALICE, "/help")
    tried = emu_client.stats()["requests"]["sendMessage"]
    bob_asked = write(emu_client, bot, BOB, "/help")
    # Bob's update did not wait out the sender's retries: known unreachable, kept at once.
    assert emu_client.stats()["requests"]["sendMessage"] == tried
    assert bot.replies.waiting() == 2
    emu_client.clear_faults()
    assert bot.replies.drain_once().delivered == 2
    assert len(answers(emu_client, ALICE, alice_asked)) == 1
    assert len(answers(emu_client, BOB, bob_asked)) == 1


def test_kept_replies_survive_a_restart_keep_their_order_and_hold_back_no_other_chat(
        runtime, emu_client, people, quick_retries):
    before = PollingBot(runtime, poll_timeout=1)
    emu_client.add_fault("outage", methods=["sendMessage"])
    first = write(emu_client, before, ALICE, "/help")
    emu_client.clear_faults()
    before.poll_once()  # acknowledges the update, as the next poll would
    before.executor.shutdown()

    after = PollingBot(runtime, poll_timeout=1)  # the bot restarted: only Redis remembers
    bob_asked = write(emu_client, after, BOB, "/help")
    assert len(answers(emu_client, BOB, bob_asked)) == 1  # Bob is answered at once
    second = write(emu_client, after, ALICE, "/today")
    # Telegram is back, but Alice's new reply may not overtake the one still waiting.
    assert answers(emu_client, ALICE, first) == []
    assert after.replies.waiting() == 2
    assert after.replies.drain_once().delivered == 2
    replies = answers(emu_client, ALICE, first)
    assert len(replies) == 2 and replies[0].startswith("Commands:"), replies
    assert replies[1].startswith("Nothing due today"), replies
    assert all(m["message_id"] > second for m in emu_client.messages(ALICE, sender="bot"))
    after.executor.shutdown()


def test_replies_kept_longer_than_ten_minutes_are_dropped_with_a_warning(
        bot, emu_client, people, quick_retries, logs):
    emu_client.add_fault("outage", methods=["sendMessage"])
    asked = write(emu_client, bot, ALICE, "/help")
    write(emu_client, bot, ALICE, "/today")
    emu_client.clear_faults()
    result = bot.replies.drain_once(now=time.time() + MAX_AGE_SECONDS + 1)
    assert (result.delivered, result.dropped) == (0, 2)
    assert bot.replies.waiting() == 0
    [record] = [r for r in logs.records if r.getMessage() == "deferred replies dropped: 2"]
    assert record.levelno == logging.WARNING and record.chat_id == str(ALICE)
    assert answers(emu_client, ALICE, asked) == []
    # Nothing holds the chat any more: the next reply goes straight out.
    later = write(emu_client, bot, ALICE, "/help")
    assert len(answers(emu_client, ALICE, later)) == 1


@pytest.mark.parametrize("refusal", ["bad request", "blocked"])
def test_replies_telegram_refuses_are_not_kept(bot, emu_client, people, logs, refusal):
    if refusal == "blocked":
        emu_client.block(ALICE)
        text, code = "hello", 403
    else:
        text, code = "", 400
    with pytest.raises(ApiTelegramException) as info:
        bot.bot.send_message(ALICE, text)
    assert info.value.error_code == code
    assert bot.replies.waiting() == 0
    assert KEPT not in logs.messages
    # and Telegram is not taken for unreachable: Bob's reply goes straight out
    asked = write(emu_client, bot, BOB, "/help")
    assert len(answers(emu_client, BOB, asked)) == 1


def test_the_bot_delivers_kept_replies_by_itself_once_telegram_is_back(
        bot, emu_client, people, quick_retries):
    emu_client.add_fault("outage", methods=["sendMessage"], seconds=3)
    asked = write(emu_client, bot, ALICE, "/help")
    assert answers(emu_client, ALICE, asked) == []
    bot.replies.start()
    try:
        wait_until(lambda: answers(emu_client, ALICE, asked), 60, "the kept reply delivered")
    finally:
        bot.replies.stop()
    assert len(answers(emu_client, ALICE, asked)) == 1
    assert bot.replies.waiting() == 0
