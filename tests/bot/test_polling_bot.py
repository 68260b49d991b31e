"""The polling bot against the Telegram emulator, with real PostgreSQL and Redis."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from habitbot.bot import app
from habitbot.bot.app import UNAUTHORIZED_RETRY, PollingBot
from habitbot.config import load_settings
from habitbot.models import AdminAlert, User
from habitbot.runtime import build_runtime
from habitbot.services import heartbeat
from habitbot.telegram.sender import MAX_TRANSIENT_ATTEMPTS
from tests.conftest import make_env
from tests.support.polling import wait_until

ALICE = 1001  # writes in Russian
BOB = 1002    # writes in English


@pytest.fixture
def runtime(settings):
    rt = build_runtime("bot", "bot", settings=settings, configure_logging=False)
    yield rt
    rt.close()


@pytest.fixture
def bot(runtime, emu_client):
    emu_client.add_user(ALICE, first_name="Алиса", language_code="ru")
    emu_client.add_user(BOB, first_name="Bob", language_code="en")
    polling = PollingBot(runtime, poll_timeout=1)
    yield polling
    polling.executor.shutdown()  # no handler of this test outlives it


def _say(emu_client, bot, user, text, **fields):
    sent = emu_client.inject_message(user, text, **fields)
    bot.poll_once()
    return emu_client.wait_for_message(user, after_message_id=sent["message_id"])


def test_start_answers_in_the_users_language_and_creates_them(bot, emu_client, engine):
    assert "Привет, Алиса" in _say(emu_client, bot, ALICE, "/start")["text"]
    assert "Hi, Bob" in _say(emu_client, bot, BOB, "/start")["text"]
    with engine.connect() as conn:
        rows = conn.execute(select(User.telegram_id, User.language).order_by(User.id)).all()
    assert [tuple(r) for r in rows] == [(ALICE, "ru"), (BOB, "en")]


def test_each_successful_poll_writes_the_heartbeat(bot, redis_conn):
    assert heartbeat.age(redis_conn, "bot") is None
    bot.poll_once()
    assert heartbeat.age(redis_conn, "bot") < 5


def test_command_menu_is_set_in_both_languages(bot, emu_client):
    bot.setup_commands()
    menus = {c.get("language_code") or "": c["commands"] for c in emu_client.commands()}
    assert [c["command"] for c in menus[""]][:3] == ["start", "help", "new"]
    assert menus[""][1]["description"] == "Помощь"
    assert menus["en"][1]["description"] == "Help"


def test_telegram_down_at_start_delays_the_command_menu_not_polling(bot, emu_client, runtime,
                                                                   monkeypatch):
    monkeypatch.setattr(app, "COMMANDS_RETRY_BASE", 0.2)
    monkeypatch.setattr(runtime.sender, "_sleep", lambda seconds: None)
    emu_client.add_fault("outage", methods=["setMyCommands"])
    running = threading.Thread(target=bot.run, name="bot-under-test")
    running.start()
    try:
        wait_until(lambda: emu_client.faults()[0]["hits"] >= 2 * MAX_TRANSIENT_ATTEMPTS, 30,
                   "setMyCommands given up twice")
        sent = emu_client.inject_message(BOB, "/help")
        reply = emu_client.wait_for_message(BOB, after_message_id=sent["message_id"],
                                            timeout=30)
        assert "/new" in reply["text"]  # polling and answering while the menu waits
        assert emu_client.commands() == []
        emu_client.clear_faults()
        wait_until(lambda: len(emu_client.commands()) == 2, 60,
                   "the command menus set once Telegram is back")
        menus = {c.get("language_code") or "": c["commands"] for c in emu_client.commands()}
        assert menus["en"][1]["description"] == "Help"
    finally:
        bot.stop()
        running.join(60)
    assert not running.is_alive()


@pytest.mark.parametrize("fields", [{"sticker": True}, {"photo": True}, {"voice": True}])
def test_non_text_messages_get_a_polite_answer(bot, emu_client, fields):
    reply = _say(emu_client, bot, BOB, None, **fields)
    assert "Send /help" in reply["text"]


@pytest.mark.parametrize("text", ["x" * 5000, "<b>&amp; \u202eRTL", "\x00\x07 ctrl", "🙂" * 300])
def test_hostile_text_never_breaks_the_bot(bot, emu_client, text):
    assert "Send /help" in _say(emu_client, bot, BOB, text)["text"]


def test_degraded_mode_answers_with_a_minimal_user(bot, emu_client, runtime, engine):
    runtime.guard.state = "degraded"
    reply = _say(emu_client, bot, ALICE, "/start")["text"]
    assert "Привет" in reply and "временно недоступны" in reply
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(User)).scalar() == 0


def test_database_down_keeps_the_bot_answering(settings, emu_client, pg_proxy,
                                               database_url, redis_url, emulator):
    env = make_env(pg_proxy.url_for(database_url), redis_url, emulator.url,
                   DB_CONNECT_TIMEOUT="1")
    rt = build_runtime("bot", "bot", settings=load_settings(env), configure_logging=False)
    bot = PollingBot(rt, poll_timeout=1)
    try:
        emu_client.add_user(BOB, first_name="Bob", language_code="en")
        pg_proxy.set_mode("refuse")
        assert "temporarily unavailable" in _say(emu_client, bot, BOB, "/help")["text"]
        pg_proxy.set_mode("pass")
        assert "temporarily unavailable" not in _say(emu_client, bot, BOB, "/help")["text"]
    finally:
        bot.executor.shutdown()
        rt.close()


def test_handler_error_is_logged_and_the_user_gets_an_apology(bot, emu_client, monkeypatch):
    from habitbot.bot.handlers import common

    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    with monkeypatch.context() as patch:
        patch.setattr(common, "help_text", broken)
        assert "Sorry, something went wrong" in _say(emu_client, bot, BOB, "/help")["text"]
    assert "/new" in _say(emu_client, bot, BOB, "/help")["text"]


def test_revoked_token_is_alerted_and_retried_slowly(bot, emu_client, engine):
    emu_client.add_fault("401")
    with pytest.raises(Exception) as info:
        bot.poll_once()
    assert bot._on_poll_error(info.value) == UNAUTHORIZED_RETRY
    with engine.connect() as conn:
        fingerprints = conn.execute(select(AdminAlert.fingerprint)).scalars().all()
    assert fingerprints == ["bot:unauthorized"]


@pytest.mark.parametrize("mode", ["5xx", "outage"])
def test_telegram_outage_is_retried_with_backoff_and_polling_resumes(bot, emu_client, mode):
    emu_client.add_fault(mode)
    delays = []
    for _ in range(3):
        with pytest.raises(Exception) as info:
            bot.poll_once()
        delays.append(bot._on_poll_error(info.value))
    assert all(0 < d <= 30 for d in delays)
    emu_client.clear_faults()
    assert "/new" in _say(emu_client, bot, BOB, "/help")["text"]


def test_redis_down_keeps_the_bot_polling_and_answering(emu_client, database_url, redis_url,
                                                        redis_proxy, emulator):
    env = make_env(database_url, redis_proxy.url_for(redis_url), emulator.url)
    rt = build_runtime("bot", "bot", settings=load_settings(env), configure_logging=False)
    bot = PollingBot(rt, poll_timeout=1)
    try:
        emu_client.add_user(BOB, first_name="Bob", language_code="en")
        redis_proxy.set_mode("refuse")
        assert "/new" in _say(emu_client, bot, BOB, "/help")["text"]
        redis_proxy.set_mode("pass")
        assert "/new" in _say(emu_client, bot, BOB, "/help")["text"]
        assert heartbeat.age(rt.redis, "bot") < 5
    finally:
        bot.executor.shutdown()
        rt.close()


def test_updates_and_handler_errors_are_counted_for_metrics(chat_with, redis_conn,
                                                            monkeypatch):
    from habitbot import metrics
    from habitbot.bot.registry import registry

    chat = chat_with(3091, "Max", "en")
    chat.say("/start")
    chat.press("🇬🇧 English")

    def broken(ctx, message):
        raise RuntimeError("boom")

    monkeypatch.setitem(registry.commands, "help", broken)
    assert "something went wrong" in chat.say("/help")["text"]
    stored = metrics.stored(redis_conn)
    assert stored['habitbot_updates_total{kind="message"}'] == 2
    assert stored['habitbot_updates_total{kind="callback_query"}'] == 1
    assert stored['habitbot_handler_errors_total{kind="message"}'] == 1
