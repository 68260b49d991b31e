"""/settings edited in place, and buttons that are forged, foreign, stale or pressed twice."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from habitbot.models import User
from habitbot.telegram.callbacks import CallbackCodec
from tests.conftest import TEST_TOKEN


@pytest.fixture
def onboarded(chat_with, engine):
    def make(user_id: int, language: str = "en"):
        chat = chat_with(user_id, "Zoe", language)
        chat.say("/help")  # creates the user
        with engine.begin() as conn:
            conn.execute(update(User).where(User.telegram_id == user_id).values(
                onboarded_at=User.created_at, language=language, timezone="Europe/Paris"))
        return chat
    return make


def _user(engine, telegram_id):
    with engine.connect() as conn:
        return conn.execute(select(User).where(User.telegram_id == telegram_id)).one()


def test_settings_menu_changes_everything_in_one_message(onboarded, engine):
    chat = onboarded(4001)
    menu = chat.say("/settings")
    assert "Timezone: Europe/Paris" in menu["text"] and "Reminders: on" in menu["text"]
    assert "🔕 Turn reminders off" in chat.buttons(menu)

    assert chat.press("🔕 Turn reminders off")["text"] == "Reminders off"
    assert "Reminders: off" in chat.message(menu["message_id"])["text"]
    assert _user(engine, 4001).notifications_enabled is False

    chat.press("🌅 Day start")
    chat.press("04")
    assert "The day starts at 04:00" in chat.message(menu["message_id"])["text"]
    assert _user(engine, 4001).day_start_hour == 4

    chat.press("🌐 Language")
    chat.press("🇷🇺 Русский")
    assert "<b>Настройки</b>" in chat.message(menu["message_id"])["raw_text"]
    assert _user(engine, 4001).language == "ru"
    count = len(chat.emu.messages(4001, sender="bot"))
    assert count == 2, "everything happened in the settings message itself"


def test_timezone_change_from_settings(onboarded, engine):
    chat = onboarded(4002)
    chat.say("/settings")
    chat.press("🕒 Timezone")
    chat.say("Asia/Tokyo")
    chat.press("✅ Yes")
    assert _user(engine, 4002).timezone == "Asia/Tokyo"
    assert "Timezone: Asia/Tokyo (UTC+9)" in chat.last()["text"]  # the menu again


def test_forged_tampered_and_truncated_buttons_change_nothing(onboarded, engine):
    chat = onboarded(4003)
    menu = chat.say("/settings")
    real = menu["reply_markup"]["inline_keyboard"][1][0]["callback_data"]  # reminders off
    for data in (real[:-1], real.replace("|0|", "|1|"), "1|setnotif|0|AAAAAAAA",
                 "2|setnotif|0", "x" * 64, "1|drop table|0|abcdefgh"):
        answer = chat.press(message_id=menu["message_id"], data=data)
        assert answer["text"] == "This button is no longer valid."
    assert _user(engine, 4003).notifications_enabled is True


def test_another_users_button_does_not_work_for_an_intruder(onboarded, chat_with, engine):
    victim = onboarded(4004)
    menu = victim.say("/settings")
    stolen = menu["reply_markup"]["inline_keyboard"][1][0]["callback_data"]
    intruder = onboarded(4005)
    own = intruder.say("/help")
    answer = intruder.press(message_id=own["message_id"], data=stolen)
    assert answer["text"] == "This button is no longer valid."
    assert _user(engine, 4004).notifications_enabled is True
    assert _user(engine, 4005).notifications_enabled is True


def test_double_press_is_idempotent(onboarded, engine):
    chat = onboarded(4006)
    menu = chat.say("/settings")
    data = menu["reply_markup"]["inline_keyboard"][1][0]["callback_data"]
    first = chat.emu.press(4006, message_id=menu["message_id"], data=data)
    second = chat.emu.press(4006, message_id=menu["message_id"], data=data)
    chat._run()
    for pressed in (first, second):
        chat.emu.wait_for_callback_answer(4006, pressed["callback_query_id"])
    assert _user(engine, 4006).notifications_enabled is False  # off, not toggled back on


def test_callback_codec_fits_telegram_limits():
    codec = CallbackCodec(TEST_TOKEN)
    data = codec.encode(2**40, "tzok", "onb", "America/Argentina/ComodRivadavia")
    assert len(data.encode()) <= 64
    with pytest.raises(ValueError):
        codec.encode(1, "x", "a" * 80)
    with pytest.raises(ValueError):
        codec.encode(1, "x", "a|b")


def test_sticker_where_text_is_expected_gets_a_hint(chat_with):
    chat = chat_with(4007, "Yan", "en")
    chat.say("/start")
    chat.press("🇬🇧 English")
    assert "Please send your location" in chat.say(None, sticker=True)["text"]


def test_unknown_command(chat_with):
    chat = chat_with(4008, "Xi", "en")
    assert "I do not know that command" in chat.say("/frobnicate")["text"]


def test_conversation_has_a_ttl(chat_with, redis_conn):
    chat = chat_with(4009, "Wu", "en")
    chat.say("/start")
    assert 0 < redis_conn.ttl("habitbot:fsm:4009") <= 24 * 3600


def test_redis_restart_mid_dialog_loses_the_dialog_at_worst(chat_with, redis_conn, engine):
    chat = chat_with(4010, "Vi", "en")
    chat.say("/start")
    chat.press("🇬🇧 English")
    redis_conn.flushdb()  # Redis restarted without persistence
    reply = chat.say("Tokyo")
    assert "I did not understand that" in reply["text"]  # the dialog is gone, the bot is not
    assert "Hi, Vi" in chat.say("/start")["text"]  # and starts over cleanly


def test_updates_of_one_chat_are_handled_in_order(onboarded, engine):
    chat = onboarded(4011)
    menu = chat.say("/settings")
    off = menu["reply_markup"]["inline_keyboard"][1][0]["callback_data"]
    codec = CallbackCodec(TEST_TOKEN)
    on = codec.encode(4011, "setnotif", 1)
    presses = [chat.emu.press(4011, message_id=menu["message_id"], data=d)
               for d in (off, on, off, on, off)]
    chat._run()
    for pressed in presses:
        chat.emu.wait_for_callback_answer(4011, pressed["callback_query_id"])
    assert _user(engine, 4011).notifications_enabled is False  # the last press wins


def test_parallel_chats_do_not_block_each_other(onboarded):
    chats = [onboarded(4100 + i) for i in range(6)]
    sent = [c.emu.inject_message(c.user_id, "/help") for c in chats]
    chats[0]._run()  # one poll fetches all six; the pool answers them side by side
    for chat, s in zip(chats, sent, strict=True):
        assert "/new" in chat.emu.wait_for_message(
            chat.user_id, after_message_id=s["message_id"])["text"]
