"""Habits service against real PostgreSQL: validation, limits, ownership, schedules, check-ins."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest
from sqlalchemy import func, insert, select

from habitbot.models import Habit, HabitCheckin, HabitSchedule, User
from habitbot.services import habits as svc
from habitbot.services.habits import HabitDraft, HabitError, HabitNotFound
from habitbot.services.quick_habit import parse_quick
from habitbot.services.users import set_timezone

NOW = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)  # two days before Berlin's DST change


def _user(engine, telegram_id: int, zone: str = "Europe/Berlin", premium: bool = False) -> int:
    values = {"telegram_id": telegram_id, "timezone": zone}
    if premium:
        values["premium_ends_at"] = datetime(2099, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        return conn.execute(insert(User).values(**values).returning(User.id)).scalar_one()


@pytest.fixture
def alice(engine):
    return _user(engine, 1)


@pytest.fixture
def mallory(engine):
    return _user(engine, 666)


def _schedules(engine, habit_id):
    with engine.connect() as conn:
        return conn.execute(select(HabitSchedule.local_time, HabitSchedule.next_fire_at)
                            .where(HabitSchedule.habit_id == habit_id)
                            .order_by(HabitSchedule.local_time)).all()


@pytest.mark.parametrize("name,code", [("", "name_empty"), ("   \t", "name_empty"),
                                       ("x" * 1000, "name_too_long"),
                                       ("\u202e\u200b", "name_empty")])
def test_bad_names_are_refused_and_nothing_is_stored(engine, alice, name, code):
    with pytest.raises(HabitError) as info:
        svc.create_habit(engine, alice, HabitDraft(name), now=NOW)
    assert info.value.code == code
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Habit)).scalar() == 0


@pytest.mark.parametrize("name", ["💧💧", "<b>&amp; bold</b>", "Читать 📚"])
def test_odd_but_valid_names_are_kept_exactly(engine, alice, name):
    habit = svc.create_habit(engine, alice, HabitDraft(name), now=NOW)
    assert habit.name == name


def test_schedule_is_stored_as_wall_clock_and_next_fire_in_utc(engine, alice):
    habit = svc.create_habit(engine, alice, HabitDraft("Read", reminder_times=[time(8, 30)]),
                             now=NOW)
    [(local, next_fire)] = _schedules(engine, habit.id)
    assert local == time(8, 30)
    assert next_fire == datetime(2026, 3, 28, 7, 30, tzinfo=UTC)  # 08:30 CET


def test_timezone_change_moves_every_reminder_with_the_user(engine, alice):
    habit = svc.create_habit(engine, alice, HabitDraft("Read", reminder_times=[time(8, 30)]))
    set_timezone(engine, 1, "Asia/Tokyo")
    [(_, next_fire)] = _schedules(engine, habit.id)
    assert next_fire.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo")).time() == \
        time(8, 30)


def test_free_limit_counts_active_habits_and_premium_lifts_it(engine, alice):
    for n in range(3):
        svc.create_habit(engine, alice, HabitDraft(f"h{n}"))
    with pytest.raises(HabitError) as info:
        svc.create_habit(engine, alice, HabitDraft("fourth"))
    assert info.value.code == "free_limit"
    rich = _user(engine, 2, premium=True)
    for n in range(5):
        svc.create_habit(engine, rich, HabitDraft(f"p{n}", reminder_times=[time(8), time(20)]))


def _create_at_once(engine, user_id: int, count: int) -> list[object]:
    """`count` habits created by as many threads at once: their ids or refusal codes."""
    results: list[object] = []

    def create(n: int) -> None:
        try:
            results.append(svc.create_habit(engine, user_id, HabitDraft(f"c{n}")).id)
        except HabitError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_creations_cannot_pass_the_free_limit(engine, alice):
    results = _create_at_once(engine, alice, 6)
    assert sorted(map(str, results)).count("free_limit") == 3


def test_several_reminders_are_premium(engine, alice):
    with pytest.raises(HabitError) as info:
        svc.create_habit(engine, alice, HabitDraft("x", reminder_times=[time(8), time(9)]))
    assert info.value.code == "several_reminders_premium"


def test_another_users_habit_is_invisible(engine, alice, mallory):
    habit = svc.create_habit(engine, alice, HabitDraft("Mine"))
    for attempt in (lambda: svc.get_habit(engine, mallory, habit.id),
                    lambda: svc.rename_habit(engine, mallory, habit.id, "pwned"),
                    lambda: svc.delete_habit(engine, mallory, habit.id),
                    lambda: svc.pause_habit(engine, mallory, habit.id),
                    lambda: svc.check_in(engine, mallory, habit.id, date(2026, 3, 27))):
        with pytest.raises(HabitNotFound):
            attempt()
    assert svc.get_habit(engine, alice, habit.id).name == "Mine"


def test_pause_clears_next_fire_and_resume_recomputes(engine, alice):
    habit = svc.create_habit(engine, alice, HabitDraft("Run", reminder_times=[time(7)]))
    svc.pause_habit(engine, alice, habit.id)
    assert _schedules(engine, habit.id)[0].next_fire_at is None
    svc.resume_habit(engine, alice, habit.id)
    assert _schedules(engine, habit.id)[0].next_fire_at is not None


def test_archive_frees_a_slot_and_restore_takes_it_back(engine, alice):
    created = [svc.create_habit(engine, alice, HabitDraft(f"h{n}")) for n in range(3)]
    svc.archive_habit(engine, alice, created[0].id)
    svc.create_habit(engine, alice, HabitDraft("new"))
    with pytest.raises(HabitError):
        svc.restore_habit(engine, alice, created[0].id)


def test_check_in_once_per_day_and_double_tap_changes_nothing(engine, alice):
    habit = svc.create_habit(engine, alice, HabitDraft("Read"))
    day = date(2026, 3, 27)
    first = svc.check_in(engine, alice, habit.id, day)
    second = svc.check_in(engine, alice, habit.id, day, "skipped")
    assert first.created and not second.created and second.status == "done"
    assert svc.undo_check_in(engine, alice, habit.id, day)
    assert svc.check_in(engine, alice, habit.id, day, "skipped").created


def test_two_taps_at_once_store_one_check_in(engine, alice):
    habit = svc.create_habit(engine, alice, HabitDraft("Read"))
    day = date(2026, 3, 27)
    threads = [threading.Thread(target=svc.check_in, args=(engine, alice, habit.id, day))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(HabitCheckin)).scalar() == 1


def test_checking_in_a_deleted_habit_is_refused(engine, alice):
    habit = svc.create_habit(engine, alice, HabitDraft("Gone"))
    svc.delete_habit(engine, alice, habit.id)
    with pytest.raises(HabitNotFound):
        svc.check_in(engine, alice, habit.id, date(2026, 3, 27))


def test_measurable_done_without_a_value_records_the_target(engine, alice):
    habit = svc.create_habit(engine, alice, HabitDraft(
        "Water", kind="measurable", target_value=Decimal(8), target_unit="glasses"))
    assert svc.check_in(engine, alice, habit.id, date(2026, 3, 27)).value == Decimal(8)


@pytest.mark.parametrize("target", [Decimal(0), Decimal(-1)])
def test_zero_or_negative_targets_are_refused(engine, alice, target):
    with pytest.raises(HabitError):
        svc.create_habit(engine, alice, HabitDraft("x", kind="measurable", target_value=target))


def test_reorder(engine, alice):
    a, b, c = (svc.create_habit(engine, alice, HabitDraft(n)).id for n in "abc")
    assert [h.id for h in svc.move_habit(engine, alice, c, -1)] == [a, c, b]
    assert [h.id for h in svc.move_habit(engine, alice, a, -1)] == [a, c, b]


def test_database_refuses_a_second_check_in_even_past_the_service(engine, alice):
    habit = svc.create_habit(engine, alice, HabitDraft("Read"))
    values = {"habit_id": habit.id, "user_id": alice, "local_date": date(2026, 1, 1),
              "status": "done"}
    with engine.begin() as conn:
        conn.execute(insert(HabitCheckin).values(**values))
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(HabitCheckin).values(**values))


# -- the one-message form ------------------------------------------------------------------
def test_quick_form_reads_name_target_frequency_and_time():
    draft = parse_quick("Read 20 pages daily 08:30")
    assert (draft.name, draft.kind, draft.target_value, draft.target_unit) == (
        "Read", "measurable", Decimal(20), "pages")
    assert (draft.frequency, draft.reminder_times) == ("daily", [time(8, 30)])


@pytest.mark.parametrize("text,frequency,mask,per_week", [
    ("Gym mon wed fri 19:00", "weekdays", 0b0010101, 3),
    ("Йога пн ср пт 07:30", "weekdays", 0b0010101, 3),
    ("Run 3 times a week 07:00", "times_per_week", 127, 3),
    ("Плавание 2 раза в неделю", "times_per_week", 127, 2),
    ("Meditate", "daily", 127, 7),
])
def test_quick_form_frequencies(text, frequency, mask, per_week):
    draft = parse_quick(text)
    assert (draft.frequency, draft.weekdays, draft.times_per_week) == (frequency, mask, per_week)


def test_quick_form_at_most_target():
    draft = parse_quick("Coffee max 2 cups")
    assert (draft.name, draft.target_direction, draft.target_value, draft.target_unit) == (
        "Coffee", "at_most", Decimal(2), "cups")


@pytest.mark.parametrize("text", ["Read 25:00", "Read 8:60"])
def test_quick_form_refuses_impossible_times(text):
    with pytest.raises(ValueError):
        parse_quick(text)



def test_pausing_or_archiving_twice_keeps_the_first_instant(engine, alice):
    habit = svc.create_habit(engine, alice, HabitDraft("Read"), now=NOW)
    first = svc.pause_habit(engine, alice, habit.id, now=NOW)
    again = svc.pause_habit(engine, alice, habit.id, now=datetime(2026, 3, 28, tzinfo=UTC))
    assert again.paused_at == first.paused_at == NOW
    archived = svc.archive_habit(engine, alice, habit.id, now=datetime(2026, 3, 29, tzinfo=UTC))
    twice = svc.archive_habit(engine, alice, habit.id, now=datetime(2026, 3, 30, tzinfo=UTC))
    assert twice.archived_at == archived.archived_at == datetime(2026, 3, 29, tzinfo=UTC)


def test_a_check_in_records_when_it_was_made_and_a_second_tap_keeps_it(engine, alice):
    habit = svc.create_habit(engine, alice, HabitDraft("Read"), now=NOW)
    first = svc.check_in(engine, alice, habit.id, date(2026, 3, 27), now=NOW)
    later = svc.check_in(engine, alice, habit.id, date(2026, 3, 27),
                         now=datetime(2026, 3, 27, 12, 1, tzinfo=UTC))
    assert first.created and not later.created
    assert first.checked_at == later.checked_at == NOW


def test_quick_form_refuses_an_over_long_text_before_parsing(engine, alice):
    with pytest.raises(HabitError) as info:
        parse_quick("Read " + "1 " * 100_000 + "pages")
    assert info.value.code == "text_too_long" and info.value.params == {"limit": 400}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("shape", ["a {}x", "a 1{}x", "a{}1 " + "y" * 40, "3x{}week"])
def test_quick_form_patterns_stay_linear_on_adversarial_text(shape):
    # Within the length bound every gap is one space; whatever the filling, parsing is quick
    # (the timeout fails a pattern that backtracks over the text).
    for filling in (" " * 390, " 1" * 190, " max" * 95, ".1" * 190, "x/" * 190):
        text = shape.format(filling)[:400]
        for _ in range(200):
            try:
                parse_quick(text)
            except (HabitError, ValueError):
                pass


@pytest.mark.parametrize("text,name,value,unit,most", [
    ("Read 20 pages", "Read", Decimal(20), "pages", False),
    ("Coffee max 2 cups", "Coffee", Decimal(2), "cups", True),
    ("Кофе не больше 2 чашек", "Кофе", Decimal(2), "чашек", True),
    ("Water ≤2,5 l", "Water", Decimal("2.5"), "l", True),
    ("Read 20pages", "Read", Decimal(20), "pages", False),
])
def test_quick_form_targets_read_as_before(text, name, value, unit, most):
    draft = parse_quick(text)
    assert (draft.name, draft.target_value, draft.target_unit) == (name, value, unit)
    assert (draft.target_direction == "at_most") == most


@pytest.mark.parametrize("text,count", [("Run 3x/week", 3), ("Run 3 times a week", 3),
                                        ("Бег 3 раза в неделю", 3), ("Run 2 x per week", 2),
                                        ("Run 4x week", 4)])
def test_quick_form_times_a_week_read_as_before(text, count):
    draft = parse_quick(text)
    assert (draft.name, draft.frequency, draft.times_per_week) == (text.split()[0],
                                                                   "times_per_week", count)


def _fill(engine, user_id: int, count: int, archived: int = 0) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Habit), [
            {"user_id": user_id, "name": f"Old {n}", "position": n,
             "archived_at": NOW if n < archived else None, "is_active": n >= archived}
            for n in range(count)])


def _habit_count(engine, user_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Habit)
                            .where(Habit.user_id == user_id)).scalar_one()


def test_premium_users_have_at_most_200_habits_archived_ones_included(engine):
    rich = _user(engine, 2, premium=True)
    _fill(engine, rich, svc.MAX_HABITS - 1, archived=50)
    svc.create_habit(engine, rich, HabitDraft("The last one"))
    for draft in (HabitDraft("One more"), parse_quick("Read 20 pages daily 08:30")):
        with pytest.raises(HabitError) as info:
            svc.create_habit(engine, rich, draft)
        assert (info.value.code, info.value.params) == ("too_many_habits", {"limit": 200})
    assert _habit_count(engine, rich) == svc.MAX_HABITS
    # Restoring an archived habit adds none: it stays possible at the cap.
    with engine.connect() as conn:
        archived = conn.execute(select(Habit.id).where(
            Habit.user_id == rich, Habit.archived_at.is_not(None)).limit(1)).scalar_one()
    assert svc.restore_habit(engine, rich, archived).is_active


def test_concurrent_creations_cannot_pass_the_habit_cap(engine):
    rich = _user(engine, 2, premium=True)
    _fill(engine, rich, svc.MAX_HABITS - 2)
    results = _create_at_once(engine, rich, 5)
    assert sorted(map(str, results)).count("too_many_habits") == 3
    assert _habit_count(engine, rich) == svc.MAX_HABITS


def test_the_habit_cap_of_new_is_the_one_of_imports():
    from habitbot.services.transfer import limits

    assert limits.MAX_HABITS is svc.MAX_HABITS == 200


@pytest.mark.parametrize(("language", "expected"), [
    ("en", "You have 200 habits, the most I keep for one person. Delete some first: /habits."),
    ("ru", "У вас 200 привычек — больше я не храню для одного человека. Сначала удалите "
           "какие-нибудь: /habits."),
])
def test_the_habit_cap_is_told_in_the_users_language(language, expected):
    from habitbot.bot.texts import ERRORS
    from habitbot.i18n import Translator

    assert Translator(language).gettext(ERRORS["too_many_habits"], limit=200) == expected
