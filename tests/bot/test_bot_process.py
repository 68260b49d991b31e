"""The real bot process (`python -m habitbot.bot`) killed with SIGKILL in the middle of a batch:
after the restart every update is handled once — none lost, none repeated. Real PostgreSQL
and Redis; Telegram is the emulator, which keeps an update until a getUpdates confirms it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from habitbot.models import Habit, ProcessedUpdate, User
from habitbot.services.users import set_timezone, touch_user
from tests.bot.test_exactly_once import unconfirmed
from tests.conftest import make_env
from tests.support.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
USERS = range(7001, 7061)


@pytest.fixture
def start_bot(database_url, redis_url, emulator, tmp_path):
    started: list[subprocess.Popen] = []
    logs: list = []

    def start() -> subprocess.Popen:
        env = {**os.environ, **make_env(database_url, redis_url, emulator.url,
                                        LOG_DIR=str(tmp_path))}
        env.pop("ALERT_CHAT_ID")
        log = (tmp_path / f"bot-{len(started)}.log").open("w")
        logs.append(log)
        started.append(subprocess.Popen([sys.executable, "-m", "habitbot.bot"], cwd=ROOT,
                                        env=env, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    for log in logs:
        log.close()


def new_habit_replies(emu_client, user: int) -> int:
    return sum("New habit" in (m.get("text") or "")
               for m in emu_client.messages(user, sender="bot"))


def test_sigkill_in_the_middle_of_a_batch_loses_no_update_and_repeats_none(
        start_bot, emu_client, engine):
    for user in USERS:
        emu_client.add_user(user, first_name=f"U{user}", language_code="en")
        touch_user(engine, user, None, f"U{user}", "en")
        set_timezone(engine, user, "UTC", complete_onboarding=True)
    user_of = {emu_client.inject_message(user, f"/new H{user}")["update_id"]: user
               for user in USERS}

    first = start_bot()
    wait_until(lambda: any(new_habit_replies(emu_client, u) for u in USERS), 60,
               "the first update handled")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    with engine.connect() as conn:  # claimed by the dead process, handler cut short
        interrupted = {user_of[u] for u in conn.execute(select(ProcessedUpdate.update_id)
                                                        .where(ProcessedUpdate.status ==
                                                               "handling")).scalars()}
    answered_before = sum(bool(new_habit_replies(emu_client, u)) for u in USERS)

    second = start_bot()
    wait_until(lambda: all(new_habit_replies(emu_client, u) for u in USERS
                           if u not in interrupted), 60, "every update handled")
    second.send_signal(signal.SIGTERM)  # a clean stop confirms what it handled
    assert second.wait(60) == 0
    assert unconfirmed(emu_client) == []

    with engine.connect() as conn:
        habits = Counter(conn.execute(select(User.telegram_id).join(
            Habit, Habit.user_id == User.id)).scalars())
    assert max(habits.values()) == 1  # nothing handled twice
    for user in USERS:
        replies = new_habit_replies(emu_client, user)
        if user in interrupted:  # at most once: the handler may or may not have finished
            assert replies <= 1 and habits[user] <= 1
        else:
            assert replies == 1 and habits[user] == 1
    assert len(interrupted) <= 4  # at most one update per handler thread was in hand
    assert answered_before < len(USERS) or not interrupted
