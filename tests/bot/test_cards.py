"""Cards within Telegram's limits for any number of habits, pages that stay put after a press,
and presses that change nothing sending no edit."""

from __future__ import annotations

import re
from dataclasses import fields, replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import insert, select, update

from habitbot.bot import cards, clock
from habitbot.models import Habit, HabitCheckin, HabitSchedule, User
from habitbot.telegram.callbacks import CallbackCodec
from habitbot.telegram.limits import BUTTON_LIMIT, TEXT_LIMIT, fit_lines, visible_length
from tests.conftest import TEST_TOKEN

# The longest name a habit can have (100), with characters that HTML must escape.
PREFIX = re.compile(r"(\d{4}) Ж")


@pytest.fixture
def settings(settings):
    """Walking a thousand habits page by page is a hundred presses in seconds: more than the
    per-user inbound throttle lets through, and not what these tests are about."""
    if "user_update_burst" not in {f.name for f in fields(settings)}:
        return settings
    return replace(settings, user_update_burst=100_000)


def _name(number: int) -> str:
    return (f"{number:04d} " + "Ж&<b>" * 20)[:100]


def _onboard(chat, engine, zone: str = "UTC"):
    chat.say("/help")
    with engine.begin() as conn:
        conn.execute(update(User).where(User.telegram_id == chat.user_id).values(
            onboarded_at=User.created_at, timezone=zone))
    return chat


def _user_id(engine, telegram_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(select(User.id).where(User.telegram_id == telegram_id)).scalar_one()


def _many_habits(engine, telegram_id: int, count: int, checked_every: int = 2) -> None:
    """`count` measurable daily habits with the longest name, unit and target, five reminder
    times each; every `checked_every`-th one checked in today with the largest value."""
    uid = _user_id(engine, telegram_id)
    if not count:
        return
    created = datetime.now(UTC) - timedelta(days=3)
    with engine.begin() as conn:
        ids = conn.execute(insert(Habit).returning(Habit.id), [dict(
            user_id=uid, name=_name(n), kind="measurable", target_value=Decimal("999999.999"),
            target_unit="ш&<" * 10 + "ш&", position=n, created_at=created)
            for n in range(count)]).scalars().all()
        conn.execute(insert(HabitSchedule), [dict(
            habit_id=hid, local_time=time(7 + k, 30), weekdays=127, is_enabled=True)
            for hid in ids for k in range(5)])
        today = datetime.now(UTC).date()
        conn.execute(insert(HabitCheckin), [dict(
            habit_id=hid, user_id=uid, local_date=today, status="done",
            value=Decimal("999999.999")) for n, hid in enumerate(ids) if n % checked_every == 0])


def _walk(chat, first: dict) -> list[dict]:
    """Every page of a card: the first, then ▶️ until there is none."""
    pages = [first]
    while "▶️" in chat.buttons(chat.message(first["message_id"])):
        chat.press("▶️", message_id=first["message_id"])
        pages.append(chat.message(first["message_id"]))
    return pages


def _within_limits(page: dict) -> None:
    assert len(page["text"]) <= TEXT_LIMIT
    assert len(chat_buttons(page)) <= BUTTON_LIMIT


def chat_buttons(message: dict) -> list[dict]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    return [b for row in rows for b in row]


def _numbers(pages: list[dict]) -> set[int]:
    return {int(n) for page in pages for n in PREFIX.findall(page["text"])}


# -- the emulator refuses what Telegram refuses ------------------------------------------------
def test_emulator_answers_like_telegram_to_over_limit_and_unchanged_messages(emu_client):
    emu_client.add_user(7100)

    def call(method: str, **params):
        return emu_client.bot_call(method, token=TEST_TOKEN, chat_id=7100, **params)

    assert call("sendMessage", text="x" * 4097) == {
        "ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
    buttons = [[{"text": str(i), "callback_data": str(i)}] for i in range(101)]
    assert call("sendMessage", text="x", reply_markup={"inline_keyboard": buttons}) == {
        "ok": False, "error_code": 400, "description": "Bad Request: reply markup is too long"}
    sent = call("sendMessage", text="<b>a</b>&amp;" + "x" * 4094, parse_mode="HTML",
                reply_markup={"inline_keyboard": buttons[:100]})
    assert sent["ok"], sent  # 4,096 after entity parsing, 100 buttons: accepted
    again = call("editMessageText", message_id=sent["result"]["message_id"],
                 text="<b>a</b>&amp;" + "x" * 4094, parse_mode="HTML",
                 reply_markup={"inline_keyboard": buttons[:100]})
    assert again["error_code"] == 400
    assert again["description"].startswith("Bad Request: message is not modified")


# -- pages ---------------------------------------------------------------------------------------
def test_pages_are_cut_by_count_and_by_rendered_length():
    blocks = ["&amp;" * 900, "x" * 900, "y" * 900, "z" * 900, "w" * 10, "v" * 10]
    # 901 visible characters each (the separator counted): four do not fit in 3,000.
    assert cards.paginate(blocks, 3000, per_page=10) == [range(0, 3), range(3, 6)]
    assert cards.paginate(blocks, 10_000, per_page=4) == [range(0, 4), range(4, 6)]
    assert cards.paginate([], 3000) == [range(0, 0)]
    assert cards.page_number("99", 3) == 2 and cards.page_number("-5", 3) == 0


def test_visible_length_counts_what_telegram_counts():
    assert visible_length("<b>Ж&amp;</b> &lt;i&gt;") == 6
    assert visible_length("🔥") == 2  # one character outside the BMP: two UTF-16 units


def test_fit_lines_keeps_a_summary_within_the_limit():
    lines = [f"line {n} " + "x" * 90 for n in range(200)]
    out = fit_lines(["title"], lines, ["end"], lambda n: f"…and {n} more")
    text = "\n".join(out)
    assert visible_length(text) <= TEXT_LIMIT
    kept = len(out) - 3
    assert out[-2] == f"…and {200 - kept} more" and out[-1] == "end" and kept > 30
    assert fit_lines(["t"], ["a", "b"], ["e"], lambda n: "more") == ["t", "a", "b", "e"]


@pytest.mark.parametrize("count", [0, 1, 200, 1000])
def test_habits_list_fits_telegram_on_every_page_and_reaches_every_habit(chat_with, engine,
                                                                         count):
    chat = _onboard(chat_with(7200 + count, "Ann", "en"), engine)
    _many_habits(engine, chat.user_id, count)
    first = chat.say("/habits")
    if count == 0:
        assert first["text"] == "You have no habits yet. Create one with /new."
        return
    pages = _walk(chat, first)
    for page in pages:
        _within_limits(page)
        assert page["text"].startswith("Your habits")
    assert _numbers(pages) == set(range(count))
    assert len(pages) == -(-count // cards.PAGE_SIZE)
    if count > 1:
        assert chat.buttons(pages[-1])[-2:] == ["◀️", f"{len(pages)}/{len(pages)}"]


@pytest.mark.parametrize("count", [0, 1, 200, 1000])
def test_today_card_fits_telegram_on_every_page_and_reaches_every_habit(chat_with, engine,
                                                                        count):
    chat = _onboard(chat_with(7300 + count, "Bo", "en"), engine)
    _many_habits(engine, chat.user_id, count)
    first = chat.say("/today")
    if count == 0:
        assert first["text"] == "Nothing due today. Create a habit with /new."
        return
    pages = _walk(chat, first)
    for page in pages:
        _within_limits(page)
        assert page["text"].startswith("Today, ")
    assert _numbers(pages) == set(range(count))
    # Checked in with the largest value: the longest lines there are.
    assert "✅ 0000 Ж&<b>" in pages[0]["text"] and "— 999999.999/999999.999 ш&<" in pages[0][
        "text"]


@pytest.mark.parametrize("count", [0, 1, 200])
def test_stats_fit_telegram_on_every_page_and_reach_every_habit(chat_with, engine, count):
    chat = _onboard(chat_with(7400 + count, "Cy", "en"), engine)
    _many_habits(engine, chat.user_id, count)
    first = chat.say("/stats")
    if count == 0:
        assert first["text"] == "No habits yet: create one with /new."
        return
    pages = _walk(chat, first)
    for page in pages:
        _within_limits(page)
        assert "🔥 Streak:" in page["text"]
    assert _numbers(pages) == set(range(count))


def test_stats_of_a_thousand_habits_fit_on_the_first_and_the_last_page(chat_with, engine):
    chat = _onboard(chat_with(7499, "Di", "en"), engine)
    _many_habits(engine, chat.user_id, 1000, checked_every=1000)
    first = chat.say("/stats")
    _within_limits(first)
    last_page = -(-1000 // 5) - 1
    data = CallbackCodec(TEST_TOKEN).encode(chat.user_id, "stpage", last_page)
    chat.press(message_id=first["message_id"], data=data)
    last = chat.message(first["message_id"])
    _within_limits(last)
    assert _numbers([last]) == set(range(995, 1000))
    assert chat.buttons(last)[-2:] == ["◀️", "200/200"]


# -- a press keeps the page ----------------------------------------------------------------------
def test_checking_in_on_page_three_of_today_stays_on_page_three(chat_with, engine):
    chat = _onboard(chat_with(7500, "Ed", "en"), engine)
    _many_habits(engine, chat.user_id, 35, checked_every=1000)  # only habit 0 checked in
    card = chat.say("/today")
    chat.press("▶️", message_id=card["message_id"])
    chat.press("▶️", message_id=card["message_id"])
    page = chat.message(card["message_id"])
    assert "3/4" in chat.buttons(page) and "⬜ 0025 Ж&<b>" in page["text"]
    chat.press(f"✅ {_name(25)[:30]}", message_id=card["message_id"])
    after = chat.message(card["message_id"])
    assert "3/4" in chat.buttons(after)
    assert "✅ 0025 Ж&<b>" in after["text"] and _numbers([after]) == set(range(20, 30))


def test_a_habit_opened_from_page_three_goes_back_to_page_three(chat_with, engine):
    chat = _onboard(chat_with(7501, "Fa", "en"), engine)
    _many_habits(engine, chat.user_id, 25)
    listing = chat.say("/habits")
    chat.press("▶️", message_id=listing["message_id"])
    chat.press("▶️", message_id=listing["message_id"])
    chat.press(f"22. {_name(21)[:40]}", message_id=listing["message_id"])
    chat.press("⏸ Pause", message_id=listing["message_id"])
    assert "⏸ " in chat.message(listing["message_id"])["text"]
    chat.press("« Back", message_id=listing["message_id"])
    back = chat.message(listing["message_id"])
    assert "3/3" in chat.buttons(back) and _numbers([back]) == set(range(20, 25))


# -- a press that changes nothing edits nothing --------------------------------------------------
def _edits(emu_client) -> int:
    return emu_client.stats()["requests"].get("editMessageText", 0)


def test_no_op_presses_on_every_card_send_no_edit(chat_with, engine, emu_client, monkeypatch):
    fixed = datetime.now(UTC)
    monkeypatch.setattr(clock, "now", lambda: fixed)  # the settings card shows the time
    chat = _onboard(chat_with(7600, "Gu", "en"), engine)
    _many_habits(engine, chat.user_id, 12, checked_every=1000)
    codec = CallbackCodec(TEST_TOKEN)

    def unchanged(message_id: int, *callback: object, data: str | None = None) -> None:
        """Press twice: the first press may bring the card up to date, the second must not
        touch it (and is handled, not refused as a stale button)."""
        data = data or codec.encode(chat.user_id, *callback)
        chat.press(message_id=message_id, data=data)
        before, shown = _edits(emu_client), chat.message(message_id)
        answer = chat.press(message_id=message_id, data=data)
        assert answer.get("text") != "This button is no longer valid.", callback
        assert _edits(emu_client) == before, callback
        assert chat.message(message_id) == shown

    today = chat.say("/today")
    hid = _habit_id(engine, 0)
    ordinal = fixed.date().toordinal()
    unchanged(today["message_id"], "ck", hid, ordinal, "d", 0)  # ✅ twice: already checked in
    unchanged(today["message_id"], "tdday", ordinal, 1)  # the page shown
    listing = chat.say("/habits")
    unchanged(listing["message_id"], "habs", 1)
    unchanged(listing["message_id"], "hab", hid, 0)
    unchanged(listing["message_id"], "habact", hid, "pause", 0)  # pausing a paused habit
    stats = chat.say("/stats")
    unchanged(stats["message_id"], "stpage", 1)
    menu = chat.say("/settings")
    unchanged(menu["message_id"], "setnotif", 0)
    unchanged(menu["message_id"], "setlang", "en")
    unchanged(menu["message_id"], "setday", 4)
    unchanged(menu["message_id"], "setrest")
    chat.press(message_id=menu["message_id"], data=codec.encode(chat.user_id, "settz"))
    choices = chat.say("+3")
    zone = chat_buttons(choices)[0]["callback_data"]
    unchanged(choices["message_id"], "tzpick", data=zone)  # the confirmation, shown again


def _habit_id(engine, number: int) -> int:
    with engine.connect() as conn:
        return conn.execute(select(Habit.id).where(Habit.name == _name(number))).scalar_one()


def test_buttons_from_before_pages_still_work_and_never_delete_unasked(chat_with, engine,
                                                                       emu_client):
    chat = _onboard(chat_with(7700, "Hu", "en"), engine)
    chat.say("/new Read")
    codec = CallbackCodec(TEST_TOKEN)
    hid = _habit_id_by(engine, "Read")
    listing = chat.say("/habits")

    def press(*callback: object) -> dict:
        return chat.press(message_id=listing["message_id"],
                          data=codec.encode(chat.user_id, *callback))

    # The confirmed delete of an older keyboard put 1 where the page now goes: it asks again.
    press("habact", hid, "delete", 1)
    assert chat.message(listing["message_id"])["text"].startswith("Delete «Read»")
    assert _habit_id_by(engine, "Read") == hid
    press("habs")
    assert chat.message(listing["message_id"])["text"].startswith("Your habits")
    ordinal = datetime.now(UTC).date().toordinal()
    today = chat.say("/today")
    chat.press(message_id=today["message_id"], data=codec.encode(chat.user_id, "ck", hid,
                                                                 ordinal, "d"))
    assert "✅ Read" in chat.message(today["message_id"])["text"]


def test_a_page_past_the_end_shows_the_last_and_a_malformed_one_changes_nothing(
        chat_with, engine, emu_client):
    chat = _onboard(chat_with(7701, "Iv", "en"), engine)
    _many_habits(engine, chat.user_id, 15)
    codec = CallbackCodec(TEST_TOKEN)
    listing = chat.say("/habits")
    chat.press(message_id=listing["message_id"], data=codec.encode(chat.user_id, "habs", 99))
    last = chat.message(listing["message_id"])
    assert "2/2" in chat.buttons(last) and _numbers([last]) == set(range(10, 15))
    answer = chat.press(message_id=listing["message_id"],
                        data=codec.encode(chat.user_id, "habs", "x"))
    assert answer["text"] == "This button is no longer valid."
    assert chat.message(listing["message_id"]) == last
    forged = CallbackCodec(TEST_TOKEN).encode(chat.user_id + 1, "habs", 0)  # someone else's
    assert chat.press(message_id=listing["message_id"], data=forged)["text"] == (
        "This button is no longer valid.")
    assert chat.message(listing["message_id"]) == last


def _habit_id_by(engine, name: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(Habit.id).where(Habit.name == name)).scalar_one()
