"""/new, /habits and /today through the bot: guided dialog, one-message form, check-ins."""

from __future__ import annotations

from sqlalchemy import select, update

from habitbot.models import Habit, HabitCheckin, HabitSchedule, User


def _onboard(chat, engine, zone: str = "Europe/Moscow"):
    chat.say("/help")
    with engine.begin() as conn:
        conn.execute(update(User).where(User.telegram_id == chat.user_id).values(
            onboarded_at=User.created_at, timezone=zone))
    return chat


def _habits(engine):
    with engine.connect() as conn:
        return conn.execute(select(Habit).order_by(Habit.id)).all()


def test_guided_new_creates_a_daily_habit_with_a_reminder(chat_with, engine):
    chat = _onboard(chat_with(5001, "Ann", "en"), engine)
    assert "What habit do you want to build?" in chat.say("/new")["text"]
    kind = chat.say("Morning run")
    assert "«Morning run»: how do you track it?" in kind["text"]
    chat.press("✅ Done / not done")
    chat.press("Every day")
    chat.press("07:00")
    assert "New habit: Morning run · every day · ⏰ 07:00" in chat.last()["text"]
    [habit] = _habits(engine)
    assert (habit.name, habit.kind, habit.frequency) == ("Morning run", "boolean", "daily")
    with engine.connect() as conn:
        [schedule] = conn.execute(select(HabitSchedule)).all()
    assert str(schedule.local_time) == "07:00:00" and schedule.next_fire_at is not None


def test_guided_new_measurable_at_most_on_chosen_days(chat_with, engine):
    chat = _onboard(chat_with(5002, "Бо", "ru"), engine)
    chat.say("/new")
    chat.say("Кофе")
    chat.press("🔢 С числом (страницы, стаканы…)")
    chat.say("не больше 2 чашек")
    chat.press("Выбрать дни…")
    for day in ("Пн", "Ср", "Пт"):
        chat.press(day)
    chat.press("Готово")
    chat.press("Без напоминания")
    [habit] = _habits(engine)
    assert (habit.kind, habit.target_direction, habit.weekdays) == (
        "measurable", "at_most", 0b0010101)
    assert "не больше 2 чашек" in chat.last()["text"]


def test_one_message_form_and_bad_times(chat_with, engine):
    chat = _onboard(chat_with(5003, "Cy", "en"), engine)
    reply = chat.say("/new Read 20 pages 3 times a week 21:00")
    assert "New habit: Read · at least 20 pages · 3 times a week · ⏰ 21:00" in reply["text"]
    for bad in ("/new Read 25:00", "/new Read 8:60"):
        assert "could not read that time" in chat.say(bad)["text"]
    assert "The name cannot be empty" in chat.say("/new 08:30")["text"]
    assert "too long" in chat.say("/new " + "x" * 1000)["text"]
    assert len(_habits(engine)) == 1


def test_free_limit_message_offers_premium(chat_with, engine):
    chat = _onboard(chat_with(5004, "Di", "en"), engine)
    for name in ("Alpha", "Beta", "Gamma"):
        chat.say(f"/new {name}")
    assert "/premium" in chat.say("/new One too many")["text"]
    assert len(_habits(engine)) == 3


def test_today_card_checks_in_and_edits_in_place(chat_with, engine):
    chat = _onboard(chat_with(5005, "Ed", "en"), engine)
    chat.say("/new Stretch")
    chat.say("/new Water 8 glasses")
    card = chat.say("/today")
    assert "⬜ Stretch" in card["text"] and "⬜ Water" in card["text"]
    chat.press("✅ Stretch")
    edited = chat.message(card["message_id"])
    assert "✅ Stretch" in edited["text"] and edited["edited"]
    assert chat.press("⏭", message_id=card["message_id"], data=card["reply_markup"][
        "inline_keyboard"][1][1]["callback_data"])["text"] in (None, "", "Already checked in.")
    assert "⏭ Water" in chat.message(card["message_id"])["text"]
    assert len(chat.emu.messages(5005, sender="bot")) == 4  # 2 × new, 1 card; no extra
    chat.press("↩️ Undo: Stretch")
    assert "⬜ Stretch" in chat.message(card["message_id"])["text"]


def test_free_text_check_in_with_a_value(chat_with, engine):
    chat = _onboard(chat_with(5006, "Flo", "en"), engine)
    chat.say("/new Water 8 glasses")
    assert "Noted: Water — 3" in chat.say("water 3")["text"]
    assert "already checked in today" in chat.say("water 5")["text"]
    with engine.connect() as conn:
        [row] = conn.execute(select(HabitCheckin.value, HabitCheckin.source)).all()
    assert (int(row.value), row.source) == (3, "text")


def test_habit_card_pause_archive_restore_delete(chat_with, engine):
    chat = _onboard(chat_with(5007, "Gil", "en"), engine)
    chat.say("/new Floss 22:00")
    listing = chat.say("/habits")
    chat.press("1. Floss", message_id=listing["message_id"])
    chat.press("⏸ Pause")
    assert "⏸" in chat.message(listing["message_id"])["text"]
    chat.press("🗄 Archive")
    chat.press("♻️ Restore")
    chat.press("🗑 Delete")
    assert "cannot be undone" in chat.message(listing["message_id"])["text"]
    chat.press("Yes, delete it with its history")
    assert _habits(engine) == []
    assert "You have no habits yet" in chat.message(listing["message_id"])["text"]


def test_someone_elses_habit_buttons_do_nothing(chat_with, engine):
    owner = _onboard(chat_with(5008, "Hal", "en"), engine)
    owner.say("/new Secret")
    listing = owner.say("/habits")
    [habit] = _habits(engine)
    intruder = _onboard(chat_with(5009, "Ivy", "en"), engine)
    from habitbot.telegram.callbacks import CallbackCodec
    from tests.conftest import TEST_TOKEN

    forged = CallbackCodec(TEST_TOKEN).encode(5009, "habact", habit.id, "delete", 1)
    own = intruder.say("/help")
    answer = intruder.press(message_id=own["message_id"], data=forged)
    assert "does not exist" in answer["text"]
    assert len(_habits(engine)) == 1 and listing


def test_check_in_from_the_reminder_edits_it_in_place(chat_with, engine, runtime):
    from datetime import UTC, datetime, timedelta

    from habitbot.services import reminders
    from habitbot.telegram.callbacks import CallbackCodec
    from workers.reminders import render

    chat = _onboard(chat_with(5010, "Jo", "en"), engine)
    chat.say("/new Read 08:30")
    with engine.begin() as conn:
        conn.execute(update(HabitSchedule).values(
            next_fire_at=datetime.now(UTC) - timedelta(seconds=5)))
    [(delivery_id, attempts)] = reminders.claim_due(engine).dispatches
    job = reminders.start_delivery(engine, delivery_id, attempts)
    text, markup = render(job, CallbackCodec(runtime.settings.bot_token))
    sent = runtime.sender.call("sendMessage", {"chat_id": 5010, "text": text,
                                                "parse_mode": "HTML", "reply_markup": markup})
    chat.press("✅ Done", message_id=sent["message_id"])
    edited = chat.message(sent["message_id"])["text"]
    assert edited.startswith("✅ ") and edited.endswith("· Read · streak 1 day")
    assert chat.press(message_id=sent["message_id"], data=markup["inline_keyboard"][0][0][
        "callback_data"])["text"] == "Already checked in."
    with engine.connect() as conn:
        assert conn.execute(select(HabitCheckin.source)).scalar_one() == "reminder"


def test_export_then_import_into_a_fresh_account_gives_the_same_stats(chat_with, engine,
                                                                       emu_client, emulator,
                                                                       runtime, monkeypatch):
    import base64

    import requests

    from tests.conftest import TEST_TOKEN
    from tests.support.jobs import install
    from tests.workers.test_imports import run_imports

    install(runtime, monkeypatch)

    first = _onboard(chat_with(5020, "Kim", "en"), engine)
    first.say("/new Read 20 pages")
    first.say("/new Stretch")
    card = first.say("/today")
    first.press("✅ Stretch", message_id=card["message_id"])
    before = first.say("/stats")["text"]
    preparing = first.say("/export")
    run_imports(runtime.redis)
    emu_client.wait_for_message(5020, after_message_id=preparing["message_id"],
                                predicate=lambda m: m["kind"] == "document" and m["text"])
    docs = [m for m in emu_client.messages(5020, sender="bot")
            if m["kind"] == "document" and m["message_id"] > preparing["message_id"]]
    assert [d["document"]["file_name"].rsplit(".", 1)[1] for d in docs] == ["csv", "json"]
    info = requests.post(f"{emulator.url}/bot{TEST_TOKEN}/getFile",
                         json={"file_id": docs[1]["document"]["file_id"]}, timeout=5).json()
    content = requests.get(f"{emulator.url}/file/bot{TEST_TOKEN}/{info['result']['file_path']}",
                           timeout=5).content
    second = _onboard(chat_with(5021, "Kim2", "en"), engine)
    started = second.say(None, document={"file_name": "habitbot.json",
                                         "content_base64": base64.b64encode(content).decode()})
    run_imports(runtime.redis)
    reply = emu_client.wait_for_message(5021, after_message_id=started["message_id"])
    assert "Import done." in reply["text"] and "2 habits created" in reply["text"]
    assert second.say("/stats")["text"] == before


def test_import_refuses_garbage_clearly(chat_with, engine, emu_client, runtime, monkeypatch):
    import base64

    from tests.support.jobs import install
    from tests.workers.test_imports import run_imports

    install(runtime, monkeypatch)
    chat = _onboard(chat_with(5022, "Lu", "en"), engine)
    garbage = base64.b64encode(bytes(range(256)) * 10).decode()
    started = chat.say(None, document={"file_name": "x.csv", "content_base64": garbage})
    run_imports(runtime.redis)
    reply = emu_client.wait_for_message(5022, after_message_id=started["message_id"])
    assert "I cannot read this file" in reply["text"]
    assert _habits(engine) == []


def test_yesterday_can_be_checked_in_from_today_card(chat_with, engine):
    from datetime import UTC, datetime, timedelta

    chat = _onboard(chat_with(5030, "Max", "en"), engine)
    chat.say("/new Journal")
    with engine.begin() as conn:
        conn.execute(update(Habit).values(created_at=datetime.now(UTC) - timedelta(days=3)))
    card = chat.say("/today")
    chat.press("◀️ Yesterday", message_id=card["message_id"])
    assert "Yesterday" in chat.message(card["message_id"])["text"]
    chat.press("✅ Journal", message_id=card["message_id"])
    assert "✅ Journal" in chat.message(card["message_id"])["text"]
    with engine.connect() as conn:
        day = conn.execute(select(HabitCheckin.local_date)).scalar_one()
    assert day == datetime.now(UTC).date() - timedelta(days=1)


def test_edit_schedule_and_target_from_the_habit_card(chat_with, engine):
    chat = _onboard(chat_with(5031, "Nia", "en"), engine)
    chat.say("/new Water 8 glasses daily 09:00")
    listing = chat.say("/habits")
    chat.press("1. Water", message_id=listing["message_id"])
    chat.press("⏰ Schedule")
    assert "Schedule changed: Water · at least 8 glasses · Mon, Wed, Fri · ⏰ 19:30" in \
        chat.say("mon wed fri 19:30")["text"]
    chat.press("🎯 Target")
    assert "must be a number" in chat.say("lots")["text"]
    assert "Target changed: Water · at most 3 l" in chat.say("max 3 l")["text"]
    [habit] = _habits(engine)
    assert (habit.weekdays, habit.target_direction) == (0b0010101, "at_most")
