"""A new user's first minutes: language, timezone three ways, confirmation, in RU and EN."""

from __future__ import annotations

import re

from sqlalchemy import select

from habitbot.models import User


def _user(engine, telegram_id):
    with engine.connect() as conn:
        return conn.execute(select(User).where(User.telegram_id == telegram_id)).one()


def test_russian_user_onboards_by_city(chat_with, engine, redis_conn):
    chat = chat_with(3001, "Аня", "ru")
    first = chat.say("/start")
    assert "Привет, Аня!" in first["text"] and "выберите язык" in first["text"]
    assert chat.buttons(first) == ["🇷🇺 Русский", "🇬🇧 English"]
    chat.press("🇷🇺 Русский")
    assert chat.message(first["message_id"])["text"] == "Язык: 🇷🇺 Русский"  # edited in place
    assert "Где вы находитесь?" in chat.last()["text"]
    confirm = chat.say("Новосибирск")
    assert re.search(r"Часовой пояс: Asia/Novosibirsk \(UTC\+7\)\. У вас сейчас \d\d:\d\d",
                     confirm["text"])
    chat.press("✅ Да")
    assert chat.message(confirm["message_id"])["text"] == \
        "Часовой пояс сохранён: Asia/Novosibirsk."
    assert chat.last()["text"].startswith("Готово!")
    user = _user(engine, 3001)
    assert (user.language, user.timezone) == ("ru", "Asia/Novosibirsk")
    assert user.onboarded_at is not None
    assert not redis_conn.exists("habitbot:fsm:3001")
    assert "Привет, Аня!" in chat.say("/start")["text"]  # onboarded: a plain greeting now


def test_english_user_onboards_by_location(chat_with, engine):
    chat = chat_with(3002, "Bob", "en")
    chat.say("/start")
    chat.press("🇬🇧 English")
    confirm = chat.say(None, location={"latitude": 51.5072, "longitude": -0.1276})
    assert "Timezone: Europe/London" in confirm["text"]
    chat.press("✅ Yes")
    assert _user(engine, 3002).timezone == "Europe/London"


def test_offset_offers_real_zones_so_dst_stays_right(chat_with, engine):
    chat = chat_with(3003, "Carl", "en")
    chat.say("/start")
    chat.press("🇬🇧 English")
    choices = chat.say("UTC+3")
    assert "Which of these is yours?" in choices["text"]
    assert "Europe/Moscow" in chat.buttons(choices)
    chat.press("Europe/Moscow")
    assert "Timezone: Europe/Moscow (UTC+3)" in chat.message(choices["message_id"])["text"]
    chat.press("✅ Yes")
    assert _user(engine, 3003).timezone == "Europe/Moscow"


def test_ambiguous_city_lists_choices_with_a_russian_plural(chat_with):
    chat = chat_with(3004, "Дима", "ru")
    chat.say("/start")
    chat.press("🇷🇺 Русский")
    reply = chat.say("London")
    assert re.match(r"Нашёл \d места? с таким названием|Нашёл \d+ мест", reply["text"])
    assert any("Europe/London" in b for b in chat.buttons(reply))


def test_ocean_location_and_nonsense_are_refused_clearly(chat_with, engine):
    chat = chat_with(3005, "Eve", "en")
    chat.say("/start")
    chat.press("🇬🇧 English")
    assert "could not find a timezone" in chat.say(
        None, location={"latitude": 0.0, "longitude": -30.0})["text"]
    reply = chat.say("Atlantis <b>")
    assert "I do not know «Atlantis <b>»" in reply["text"]  # shown literally, not as markup
    assert "&lt;b&gt;" in reply["raw_text"]
    assert "No timezone has that offset" in chat.say("-11:30")["text"]
    assert "Please send your location" in chat.say("x" * 200)["text"]
    assert _user(engine, 3005).onboarded_at is None


def test_change_goes_back_and_cancel_leaves_the_dialog(chat_with, engine, redis_conn):
    chat = chat_with(3006, "Fay", "en")
    chat.say("/start")
    chat.press("🇬🇧 English")
    confirm = chat.say("europe/berlin")  # an IANA name works too
    yes_data = confirm["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    chat.press("✏️ Change")
    assert "Where are you?" in chat.last()["text"]
    assert "Cancelled" in chat.say("/cancel")["text"]
    assert not redis_conn.exists("habitbot:fsm:3006")
    # The old confirmation button is stale now: nothing changes.
    answer = chat.press(message_id=confirm["message_id"], data=yes_data)
    assert answer["text"] == "This button is no longer valid."
    assert _user(engine, 3006).timezone == "Europe/Moscow"  # the default, untouched


def test_dialog_survives_a_bot_restart(chat_with, emu_client, runtime, engine):
    from habitbot.bot.app import PollingBot

    chat = chat_with(3007, "Gus", "en")
    chat.say("/start")
    chat.press("🇬🇧 English")
    chat.bot = PollingBot(runtime, poll_timeout=1)  # a new process, same Redis
    assert "Timezone: Asia/Tokyo" in chat.say("Tokyo")["text"]
    chat.bot.executor.shutdown()
