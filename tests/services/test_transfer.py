"""Export and import against real PostgreSQL: our JSON and CSV, Loop Habit Tracker's CSV export
(current and old formats), idempotence, the free limit, and every refused file writing nothing."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import zipfile
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from time import thread_time

import pytest
from sqlalchemy import func, insert, select, update

from habitbot.models import Habit, HabitCheckin, HabitSchedule, RestPeriod, User
from habitbot.services import habits as svc
from habitbot.services import stats, transfer
from habitbot.services.habits import HabitDraft
from habitbot.services.transfer import (
    ImportSummary,
    TransferError,
    export_user,
    import_file,
    reading,
    to_csv,
    to_json,
    writing,
)

NOW = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
LOOP_HEADER = ("Position,Name,Type,Question,Description,FrequencyNumerator,"
               "FrequencyDenominator,Color,Unit,Target Type,Target Value,Archived?")
LOOP_HABITS = (f"{LOOP_HEADER}\n"
               "001,Meditate,YES_NO,Did you meditate?,,1,1,#FF8F00,,,,false\n"
               "002,Gym,YES_NO,\"Gym, today?\",,3,7,#00897B,,,,false\n"
               "003,Сигареты,NUMERICAL,,,1,1,#E53935,шт,AT_MOST,5.0,false\n"
               "004,Old habit,YES_NO,,,1,2,#000000,,,,true\n")
LOOP_NAMES = ["Meditate", "Gym", "Сигареты", "Old habit"]
LOOP_FOLDERS = ["001 Meditate", "002 Gym", "003", "004 Old habit"]
# Newest first, like Loop writes it; a future day and an impossible date are ignored.
LOOP_DAYS = [
    ("2026-03-28", "YES_MANUAL", "UNKNOWN", "UNKNOWN", "UNKNOWN"),
    ("2026-03-27", "YES_MANUAL", "YES_AUTO", "3000", "UNKNOWN"),
    ("2026-03-26", "SKIP", "YES_MANUAL", "0", "UNKNOWN"),
    ("2026-03-25", "NO", "YES_AUTO", "2500", "YES_MANUAL"),
    ("2026-03-24", "UNKNOWN", "NO", "UNKNOWN", "UNKNOWN"),
    ("2026-02-30", "YES_MANUAL", "UNKNOWN", "UNKNOWN", "UNKNOWN"),
]
LOOP_EXPECTED = {
    "Meditate": ("boolean", None, None, "at_least", "daily", 7, False,
                 {date(2026, 3, 27): ("done", None), date(2026, 3, 26): ("skipped", None)}),
    "Gym": ("boolean", None, None, "at_least", "times_per_week", 3, False,
            {date(2026, 3, 26): ("done", None)}),
    "Сигареты": ("measurable", Decimal(5), "шт", "at_most", "daily", 7, False,
                 {date(2026, 3, 27): ("done", Decimal(3)),
                  date(2026, 3, 25): ("done", Decimal("2.5"))}),
    "Old habit": ("boolean", None, None, "at_least", "daily", 7, True,
                  {date(2026, 3, 25): ("done", None)}),
}
OLD_HABITS = ("Position,Name,Question,Description,NumRepetitions,Interval,Color\n"
              "001,Meditate,Did you meditate?,,1,1,#FF8F00\n"
              "002,Wake up early,Before 6am?,,2,7,#00897B\n")
OLD_DAYS = [("2026-03-27", "-1", "2"), ("2026-03-26", "2", "0"), ("2026-03-25", "3", "1"),
            ("2026-03-24", "-1", "2")]
OLD_EXPECTED = {
    "Meditate": ("boolean", None, None, "at_least", "daily", 7, False,
                 {date(2026, 3, 26): ("done", None), date(2026, 3, 25): ("skipped", None)}),
    "Wake up early": ("boolean", None, None, "at_least", "times_per_week", 2, False,
                      {date(2026, 3, 27): ("done", None), date(2026, 3, 24): ("done", None)}),
}


def _user(engine, telegram_id: int, premium: bool = False) -> int:
    values: dict[str, object] = {"telegram_id": telegram_id, "timezone": "Europe/Berlin"}
    if premium:
        values["premium_ends_at"] = datetime(2099, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        return conn.execute(insert(User).values(**values).returning(User.id)).scalar_one()


@pytest.fixture
def alice(engine):
    """A free user."""
    return _user(engine, 1)


@pytest.fixture
def patricia(engine):
    """A premium user."""
    return _user(engine, 2, premium=True)


def _stored(engine, user_id: int) -> dict[str, tuple]:
    """Each habit of the user by name: its settings, archived flag and check-ins."""
    out: dict[str, tuple] = {}
    with engine.connect() as conn:
        habits = conn.execute(select(Habit).where(Habit.user_id == user_id)
                              .order_by(Habit.position, Habit.id)).all()
        for habit in habits:
            checkins = {r.local_date: (r.status, r.value) for r in conn.execute(
                select(HabitCheckin).where(HabitCheckin.habit_id == habit.id))}
            out[habit.name] = (habit.kind, habit.target_value, habit.target_unit,
                               habit.target_direction, habit.frequency, habit.times_per_week,
                               habit.archived_at is not None, checkins)
    return out


def _row_counts(engine) -> list[int]:
    with engine.connect() as conn:
        return [conn.execute(select(func.count()).select_from(model)).scalar_one()
                for model in (Habit, HabitCheckin, HabitSchedule)]


def _snapshot(engine) -> list:
    with engine.connect() as conn:
        return [conn.execute(select(model).order_by(model.id)).all()
                for model in (Habit, HabitCheckin, HabitSchedule)]


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in files.items():
            archive.writestr(path, text.encode("utf-8"))
    return buffer.getvalue()


def _matrix(names: list[str], days: list[tuple[str, ...]]) -> str:
    lines = ["Date," + "".join(f"{name}," for name in names)]
    lines += ["".join(f"{cell}," for cell in day) for day in days]
    return "\n".join(lines) + "\n"


def _loop_zip(layout: str) -> bytes:
    files = {"Habits.csv": LOOP_HABITS, "Checkmarks.csv": _matrix(LOOP_NAMES, LOOP_DAYS),
             "Scores.csv": _matrix(LOOP_NAMES, [(d[0], "0.5", "0.1", "0.2", "0.3")
                                                for d in LOOP_DAYS])}
    if layout != "top_level_only":
        for column, folder in enumerate(LOOP_FOLDERS, start=1):
            rows = "".join(f'{day[0]},{day[column]},"note, with comma"\n' for day in LOOP_DAYS)
            files[f"{folder}/Checkmarks.csv"] = "Date,Value,Notes\n" + rows
            files[f"{folder}/Scores.csv"] = "Date,Score\n2026-03-27,0.5000\n"
    if layout == "nested_root":
        files = {f"Loop Habits CSV 2026-03-27/{path}": text for path, text in files.items()}
    return _zip(files)


# -- export --------------------------------------------------------------------------------
def _habit(engine, user_id: int, draft: HabitDraft) -> int:
    return svc.create_habit(engine, user_id, draft, now=NOW - timedelta(days=30)).id


def _rich_history(engine, user_id: int) -> None:
    read = _habit(engine, user_id, HabitDraft("Читать 📚", reminder_times=[time(8, 30),
                                                                          time(21)]))
    water = _habit(engine, user_id, HabitDraft(
        "Water", kind="measurable", target_value=Decimal("2.5"), target_unit="л"))
    smoke = _habit(engine, user_id, HabitDraft(
        "Smoke", kind="measurable", target_value=Decimal(3), target_direction="at_most",
        frequency="weekdays", weekdays=0b0010101))
    gym = _habit(engine, user_id, HabitDraft("Gym", frequency="times_per_week",
                                             times_per_week=3, reminder_times=[time(18)]))
    old = _habit(engine, user_id, HabitDraft("Old"))
    _habit(engine, user_id, HabitDraft("Untouched"))
    for offset in range(10):
        day = date(2026, 3, 1) + timedelta(days=offset)
        svc.check_in(engine, user_id, read, day, "done" if offset % 3 else "skipped")
        svc.check_in(engine, user_id, water, day, value=Decimal(offset) / 4)
        svc.check_in(engine, user_id, smoke, day, value=Decimal(offset % 4))
        svc.check_in(engine, user_id, old, day)
    svc.check_in(engine, user_id, gym, date(2026, 3, 2))
    svc.pause_habit(engine, user_id, old, now=NOW - timedelta(days=12))
    svc.archive_habit(engine, user_id, old, now=NOW - timedelta(days=5))
    svc.pause_habit(engine, user_id, gym, now=NOW - timedelta(days=3))
    stats.start_rest(engine, user_id, date(2026, 3, 4), date(2026, 3, 5))
    with engine.begin() as conn:
        conn.execute(update(Habit).where(Habit.user_id == user_id)
                     .values(created_at=datetime(2026, 2, 1, 9, 15, tzinfo=UTC)))
        conn.execute(insert(RestPeriod).values(user_id=user_id, habit_id=water,
                                               starts_on=date(2026, 3, 7),
                                               ends_on=date(2026, 3, 9)))


def _statistics(engine, user_id: int) -> list[tuple]:
    return [(s.habit.name, s.spec, s.checkins, s.rest, s.summary)
            for s in stats.user_stats(engine, user_id, date(2026, 3, 27), include_archived=True)]


def test_json_export_imported_into_a_fresh_user_reproduces_every_habit_and_check_in(
        engine, patricia):
    _rich_history(engine, patricia)
    original = export_user(engine, patricia, now=NOW)
    fresh = _user(engine, 3, premium=True)

    summary = import_file(engine, fresh, "habitbot.json", to_json(original), now=NOW)

    assert summary == ImportSummary(6, 0, 41, 0, 0, [])
    copy = export_user(engine, fresh, now=NOW)
    assert copy.habits == original.habits
    assert copy.rest_periods == original.rest_periods == ((date(2026, 3, 4), date(2026, 3, 5)),)
    assert _statistics(engine, fresh) == _statistics(engine, patricia)
    assert [h.name for h in copy.habits] == ["Читать 📚", "Water", "Smoke", "Gym", "Old",
                                             "Untouched"]
    assert [(h.archived, h.paused) for h in copy.habits][3:5] == [(False, True), (True, False)]
    with engine.connect() as conn:
        fires = conn.execute(select(HabitSchedule.next_fire_at).join(
            Habit, Habit.id == HabitSchedule.habit_id).where(Habit.user_id == fresh,
                                                              Habit.name == "Gym")).scalars()
        assert list(fires) == [None]  # paused: no reminder until resumed


def test_json_export_is_deterministic_and_self_describing(engine, patricia):
    _rich_history(engine, patricia)
    first = to_json(export_user(engine, patricia, now=NOW))
    assert first == to_json(export_user(engine, patricia, now=NOW))
    doc = json.loads(first)
    assert (doc["format"], doc["version"], doc["timezone"]) == ("habitbot-export", 1,
                                                                "Europe/Berlin")
    assert doc["exported_at"] == "2026-03-27T12:00:00+00:00"
    read, water, smoke = doc["habits"][:3]
    assert read["reminder_times"] == ["08:30", "21:00"]
    assert water["target_value"] == "2.5" and water["target_unit"] == "л"
    assert water["checkins"][2] == {"date": "2026-03-03", "status": "done", "value": "0.5"}
    assert smoke["weekdays"] == ["mon", "wed", "fri"]
    dates = [c["date"] for c in read["checkins"]]
    assert dates == sorted(dates)


def test_csv_export_quotes_commas_quotes_and_newlines_and_keeps_cyrillic(engine, alice):
    with engine.begin() as conn:
        tricky = conn.execute(insert(Habit).values(
            user_id=alice, name='a,"b"\nc', position=1).returning(Habit.id)).scalar_one()
        conn.execute(insert(Habit).values(
            user_id=alice, name="Отжимания", kind="measurable", target_value=Decimal(20),
            target_unit="раз", position=2))
        conn.execute(insert(Habit).values(user_id=alice, name="=HYPERLINK(\"x\")", position=3))
        conn.execute(insert(HabitCheckin).values(habit_id=tricky, user_id=alice,
                                                 local_date=date(2026, 3, 1), status="done"))

    raw = to_csv(export_user(engine, alice, now=NOW))

    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    assert '"a,""b""\nc"' in text and "\r\n" in text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [
        list(transfer.CSV_COLUMNS),
        ['a,"b"\nc', "boolean", "", "", "at_least", "daily",
         "mon,tue,wed,thu,fri,sat,sun", "7", "2026-03-01", "done", ""],
        ["Отжимания", "measurable", "20", "раз", "at_least", "daily",
         "mon,tue,wed,thu,fri,sat,sun", "7", "", "", ""],
        ["'=HYPERLINK(\"x\")", "boolean", "", "", "at_least", "daily",
         "mon,tue,wed,thu,fri,sat,sun", "7", "", "", ""],
    ]


def test_our_csv_export_imports_back(engine, patricia):
    _rich_history(engine, patricia)
    original = export_user(engine, patricia, now=NOW)
    fresh = _user(engine, 3, premium=True)

    summary = import_file(engine, fresh, "habitbot.csv", to_csv(original), now=NOW)

    assert (summary.habits_created, summary.checkins_imported) == (6, 41)
    copy = export_user(engine, fresh, now=NOW)
    settings = [(h.name, h.kind, h.target_value, h.target_unit, h.target_direction,
                 h.frequency, h.weekdays, h.times_per_week, h.checkins)
                for h in (*original.habits, *copy.habits)]
    assert settings[:6] == settings[6:]


# -- Loop Habit Tracker --------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["habit_folders", "top_level_only", "nested_root"])
def test_loop_zip_becomes_habits_and_check_ins(engine, alice, layout):
    summary = import_file(engine, alice, "Loop Habits CSV 2026-03-27.zip", _loop_zip(layout),
                          now=NOW)

    assert _stored(engine, alice) == LOOP_EXPECTED
    assert (summary.habits_created, summary.habits_matched, summary.checkins_imported,
            summary.checkins_skipped_existing, summary.rows_ignored) == (4, 0, 6, 0, 2)
    assert set(summary.warnings) == {"frequency_changed_to_daily", "bad_dates", "future_dates"}


def test_loop_habits_start_on_their_first_imported_day(engine, alice):
    import_file(engine, alice, "loop.zip", _loop_zip("habit_folders"), now=NOW)
    with engine.connect() as conn:
        created = dict(conn.execute(select(Habit.name, Habit.created_at)).all())
    assert created["Meditate"] == datetime(2026, 3, 25, 23, 0, tzinfo=UTC)  # 26th in Berlin
    assert created["Сигареты"] == datetime(2026, 3, 24, 23, 0, tzinfo=UTC)


def test_old_loop_habits_and_checkmarks_files_imported_one_after_the_other(engine, alice):
    first = import_file(engine, alice, "Habits.csv", OLD_HABITS.encode(), now=NOW)
    second = import_file(engine, alice, "Checkmarks.csv",
                         _matrix(["Meditate", "Wake up early"], OLD_DAYS).encode(), now=NOW)

    assert (first.habits_created, first.checkins_imported) == (2, 0)
    assert (second.habits_created, second.habits_matched, second.checkins_imported) == (0, 2, 4)
    assert _stored(engine, alice) == OLD_EXPECTED


def test_old_loop_zip_with_headerless_habit_files(engine, alice):
    files = {"Habits.csv": OLD_HABITS,
             "Checkmarks.csv": _matrix(["Meditate", "Wake up early"], OLD_DAYS)}
    for column, folder in enumerate(["001 Meditate", "002 Wake up early"], start=1):
        files[f"{folder}/Checkmarks.csv"] = "".join(f"{d[0]},{d[column]}\n" for d in OLD_DAYS)

    summary = import_file(engine, alice, "loop.zip", _zip(files), now=NOW)

    assert summary.checkins_imported == 4
    assert _stored(engine, alice) == OLD_EXPECTED


def test_bare_checkmarks_without_habits_csv_tells_numbers_from_marks(engine, alice):
    days = [("2026-03-27", "YES_MANUAL", "12000"), ("2026-03-26", "SKIP", "UNKNOWN"),
            ("2026-03-25", "NO", "7.5")]

    summary = import_file(engine, alice, "Checkmarks.csv",
                          _matrix(["Read", "Steps"], days).encode(), now=NOW)

    stored = _stored(engine, alice)
    assert stored["Read"][0] == "boolean" and stored["Read"][-1] == {
        date(2026, 3, 27): ("done", None), date(2026, 3, 26): ("skipped", None)}
    assert stored["Steps"][:2] == ("measurable", Decimal(1))
    assert stored["Steps"][-1] == {date(2026, 3, 27): ("done", Decimal(12)),
                                   date(2026, 3, 25): ("done", Decimal("7.5"))}
    assert summary.warnings == ["target_adjusted"]


def test_importing_the_same_file_twice_changes_nothing(engine, alice):
    data = _loop_zip("habit_folders")
    first = import_file(engine, alice, "loop.zip", data, now=NOW)
    before = _snapshot(engine)

    second = import_file(engine, alice, "loop.zip", data, now=NOW + timedelta(hours=1))

    assert _snapshot(engine) == before
    assert (second.habits_created, second.habits_matched, second.checkins_imported,
            second.checkins_skipped_existing) == (0, 4, 0, first.checkins_imported)


def test_existing_check_ins_on_the_same_day_are_kept(engine, alice):
    read = _habit(engine, alice, HabitDraft("Meditate"))
    svc.check_in(engine, alice, read, date(2026, 3, 27), "skipped")

    summary = import_file(engine, alice, "loop.zip", _loop_zip("habit_folders"), now=NOW)

    assert (summary.habits_created, summary.habits_matched) == (3, 1)
    assert (summary.checkins_imported, summary.checkins_skipped_existing) == (5, 1)
    assert _stored(engine, alice)["Meditate"][-1] == {
        date(2026, 3, 27): ("skipped", None), date(2026, 3, 26): ("skipped", None)}


def test_free_limit_archives_the_extra_habits_and_keeps_their_history(engine, alice):
    for name in ("One", "Two"):
        _habit(engine, alice, HabitDraft(name))

    summary = import_file(engine, alice, "loop.zip", _loop_zip("habit_folders"), now=NOW)

    stored = _stored(engine, alice)
    assert [name for name, habit in stored.items() if not habit[6]] == ["One", "Two", "Meditate"]
    assert stored["Сигареты"][6] and stored["Сигареты"][-1] == LOOP_EXPECTED["Сигареты"][-1]
    assert "archived_over_free_limit" in summary.warnings
    assert summary.checkins_imported == 6


def test_free_user_keeps_one_reminder_per_imported_habit(engine, alice, patricia):
    _habit(engine, patricia, HabitDraft("Read", reminder_times=[time(8), time(20)]))
    data = to_json(export_user(engine, patricia, now=NOW))

    summary = import_file(engine, alice, "export.json", data, now=NOW)

    assert summary.warnings == ["reminders_trimmed"]
    with engine.connect() as conn:
        times = conn.execute(select(HabitSchedule.local_time).join(
            Habit, Habit.id == HabitSchedule.habit_id).where(Habit.user_id == alice)).scalars()
        assert list(times) == [time(8)]


def test_names_broken_beyond_repair_are_skipped_with_their_rows(engine, alice):
    habits = (f"{LOOP_HEADER}\n001,  Read \u200b ,YES_NO,,,1,1,#000,,,,false\n"
              f"002,{'x' * 150},YES_NO,,,1,1,#000,,,,false\n"
              "003,\u202e\u200b,YES_NO,,,1,1,#000,,,,false\n")
    files = {"Habits.csv": habits, "001 Read/Checkmarks.csv": "Date,Value,Notes\n"
             "2026-03-01,YES_MANUAL,\n",
             "002 xxx/Checkmarks.csv": "Date,Value,Notes\n2026-03-01,YES_MANUAL,\n"
             "2026-03-02,YES_MANUAL,\n"}

    summary = import_file(engine, alice, "loop.zip", _zip(files), now=NOW)

    assert list(_stored(engine, alice)) == ["Read"]
    assert (summary.habits_created, summary.checkins_imported, summary.rows_ignored) == (1, 1, 2)
    assert summary.warnings == ["invalid_names"]


def test_the_import_is_all_or_nothing(engine, alice, monkeypatch):
    def broken(conn, rows):
        raise RuntimeError("connection lost")

    monkeypatch.setattr(writing, "_insert_checkins", broken)
    with pytest.raises(RuntimeError):
        import_file(engine, alice, "loop.zip", _loop_zip("habit_folders"), now=NOW)
    assert _row_counts(engine) == [0, 0, 0]


# -- refused files -------------------------------------------------------------------------
def _bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Habits.csv", LOOP_HABITS)
        archive.writestr("Checkmarks.csv", b"0" * (21 * 1024 * 1024))
    return buffer.getvalue()


def _zip_lying_about_its_size() -> bytes:
    real, declared = struct.pack("<I", 30 * 1024 * 1024), struct.pack("<I", 1000)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Habits.csv", LOOP_HABITS)
        archive.writestr("Checkmarks.csv", b"0" * (30 * 1024 * 1024))
    assert buffer.getvalue().count(real) == 2  # the local and the central header
    return buffer.getvalue().replace(real, declared)


def _crowded_zip() -> bytes:
    return _zip({"Habits.csv": LOOP_HABITS} | {f"{n:03d} x/Checkmarks.csv": "Date,Value,Notes\n"
                                               for n in range(1, transfer.MAX_ZIP_ENTRIES + 1)})


def _our_json(**overrides: object) -> bytes:
    return json.dumps({"format": "habitbot-export", "version": 1, "habits": [
        {"name": "Read", "checkins": [{"date": "2026-03-01", "status": "done"}]}],
        **overrides}).encode()


def _many_habits() -> bytes:
    rows = "".join(f"{n:03d},Habit {n},YES_NO,,,1,1,#000,,,,false\n" for n in range(1, 202))
    return f"{LOOP_HEADER}\n{rows}".encode()


def _many_checkins() -> bytes:
    names = [f"h{n}" for n in range(101)]
    days = [((date(2026, 3, 27) - timedelta(days=d)).isoformat(), *["2"] * 101)
            for d in range(1000)]
    return _matrix(names, days).encode()


def _rest_periods(count: int) -> bytes:
    day = date(2020, 1, 1)
    periods = [{"starts_on": (day + timedelta(days=2 * n)).isoformat(),
                "ends_on": (day + timedelta(days=2 * n)).isoformat()} for n in range(count)]
    return _our_json(rest_periods=periods)


REFUSED = {
    "too_large": lambda: b"Date,Read,\n" + b"2026-03-01,2,\n" * (6 * 1024 * 1024 // 14),
    "zip_too_large": _bomb,
    "zip_too_many_files": _crowded_zip,
    "bad_zip": lambda: b"PK\x03\x04" + os.urandom(2000),
    "bad_zip-lies_about_its_size": _zip_lying_about_its_size,
    "not_csv_or_zip": lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8,
    "bad_encoding": lambda: "Привычка,Дата\nЧтение,2026-03-01\n".encode("cp1251"),
    "unknown_columns": lambda: b"name,date\nRead,2026-03-01\n",
    "empty": lambda: b"",
    "empty-header-only": lambda: f"{LOOP_HEADER}\n".encode(),
    "empty-our-csv": lambda: ",".join(transfer.CSV_COLUMNS).encode("utf-8-sig"),
    "too_many_habits": _many_habits,
    "too_many_checkins": _many_checkins,
    "too_many_checkins-json": lambda: _our_json(habits=[{"name": "Read", "checkins": [
        {"date": "2026-03-01", "status": "done"}] * (transfer.MAX_CHECKINS + 1)}]),
    "too_many_habits-json": lambda: _our_json(habits=[{"name": f"h{n}"} for n in range(201)]),
    "too_many_rest_periods": lambda: _rest_periods(transfer.MAX_REST_PERIODS + 1),
    "too_many_rows": lambda: b"Date,Read,\n" + b"x,\n" * (transfer.MAX_ROWS + 1),
    "too_many_columns": lambda: b"Date,Read,\n2026-03-01,2" + b"," * transfer.MAX_COLUMNS,
    "line_too_long": lambda: b"Date,Read,\n2026-03-01,2" + b" " * transfer.MAX_LINE_CHARS,
    "bad_json": lambda: b'{"format": "habitbot-export", "version": 1, "habits": [',
    "unknown_format": lambda: b'{"habits": []}',
    "unsupported_version": lambda: _our_json(version=2),
    "send_loop_zip": lambda: b"Date,Value,Notes\n2026-03-01,YES_MANUAL,\n",
    "send_loop_zip-old_headerless": lambda: b"2026-03-01,2\n2026-02-28,0\n",
    "send_loop_zip-zip_of_one_habit": lambda: _zip({"001 Read/Checkmarks.csv":
                                                    "Date,Value,Notes\n2026-03-01,SKIP,\n"}),
    "bad_encoding-utf16": lambda: "Date,Читать,\n2026-03-01,2,\n".encode("utf-16"),
    "unknown_archive": lambda: _zip({"readme.txt": "hello"}),
    # A quoted cell of 200,000 characters over short lines.
    "bad_csv": lambda: b'Date,Read,\n2026-03-01,"' + b"x" * 1000 + b"\nx" * 200_000 + b'",\n',
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_files_raise_their_code_and_write_nothing(engine, alice, case):
    with pytest.raises(TransferError) as info:
        import_file(engine, alice, "upload", REFUSED[case](), now=NOW)
    assert info.value.code == case.split("-")[0]
    assert _row_counts(engine) == [0, 0, 0]


def test_a_six_megabyte_file_is_refused_before_it_is_read(engine, alice, monkeypatch):
    def parse(*args):
        raise AssertionError("parsed a file that is too large")

    monkeypatch.setattr(reading, "parse", parse)
    with pytest.raises(TransferError) as info:
        import_file(engine, alice, "big.csv", b"x" * (6 * 1024 * 1024), now=NOW)
    assert info.value.code == "too_large"


def test_a_zip_bomb_is_refused_without_inflating_it(engine, alice, monkeypatch):
    bomb = _bomb()
    assert len(bomb) < 100_000
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: pytest.fail("inflated"))
    with pytest.raises(TransferError) as info:
        import_file(engine, alice, "bomb.zip", bomb, now=NOW)
    assert info.value.code == "zip_too_large"


def test_bad_dates_and_values_are_counted_not_fatal(engine, alice):
    rows = [list(transfer.CSV_COLUMNS),
            ["Read", "boolean", "", "", "at_least", "daily", "", "7", "2026-03-01", "done", ""],
            ["Read", "boolean", "", "", "at_least", "daily", "", "7", "01.03.2026", "done", ""],
            ["Read", "boolean", "", "", "at_least", "daily", "", "7", "2026-03-02", "maybe", ""],
            ["Read", "boolean", "", "", "at_least", "daily", "", "7", "2099-01-01", "done", ""]]
    out = io.StringIO()
    csv.writer(out).writerows(rows)

    summary = import_file(engine, alice, "edited.csv", out.getvalue().encode(), now=NOW)

    assert (summary.checkins_imported, summary.rows_ignored) == (1, 3)
    assert summary.warnings == ["bad_dates", "bad_values", "future_dates"]


def test_scores_csv_alone_is_refused(engine, alice):
    with pytest.raises(TransferError) as info:
        import_file(engine, alice, "Scores.csv", _matrix(["Read"], [("2026-03-01", "0.5")])
                    .encode(), now=NOW)
    assert info.value.code == "send_loop_zip"


def test_hand_edited_json_keeps_the_usable_habits(engine, alice):
    good = {"name": "Read", "checkins": [
        {"date": "2026-03-01", "status": "done"}, {"date": "2026-03-02", "status": "done",
                                                   "value": "-1"},
        "not a check-in", {"date": "2026-03-03", "status": "maybe"}]}
    broken = [{"name": "Late", "reminder_times": ["25:00"], "checkins": [{}]},
              {"name": "Water", "kind": "measurable", "checkins": []},
              {"name": "Days", "weekdays": ["funday"]},
              {"name": "Kind", "kind": "spiritual"}]
    data = json.dumps({"format": "habitbot-export", "version": 1,
                       "habits": [good, *broken]}).encode()

    summary = import_file(engine, alice, "edited.json", data, now=NOW)

    assert list(_stored(engine, alice)) == ["Read"]
    assert (summary.habits_created, summary.checkins_imported, summary.rows_ignored) == (1, 1, 4)
    assert summary.warnings == ["bad_values", "invalid_habits"]


# -- pathological files: refused within the limits, nothing written -----------------------
def _commas_then_short_rows(commas: int, rows: int) -> bytes:
    """One row of `commas` empty cells, then many short rows: narrowing the column width one
    step at a time over every row was commas × rows of work."""
    return (b"Date,Read,\n2026-03-01,2" + b"," * commas + b"\n" + b"x,1\n" * rows)


def _wide_header(names: int, rows: int) -> bytes:
    """`names` habit names, one row of names + 1 cells, then short rows: the habits' columns
    were built as a names × rows table."""
    header = "Date," + "".join(f"h{n}," for n in range(names))
    full = "2026-03-01," + "2," * names
    return (f"{header}\n{full}\n" + "1\n" * rows).encode()


def _zip_bomb_of_commas() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Habits.csv", LOOP_HABITS)
        archive.writestr("Checkmarks.csv", _commas_then_short_rows(12 * 1024 * 1024, 1_500_000))
    return buffer.getvalue()


def _many_checkins_cheaply() -> bytes:
    """900,000 check-ins in 2 MB: 100 habits marked done on 9,000 days."""
    names = [f"h{n}" for n in range(100)]
    days = [((date(2026, 3, 27) - timedelta(days=d)).isoformat(), *["2"] * 100)
            for d in range(9_000)]
    return _matrix(names, days).encode()


PATHOLOGICAL = {
    "line_too_long-commas": lambda: _commas_then_short_rows(3 * 1024 * 1024, 10),
    "too_many_columns-commas": lambda: _commas_then_short_rows(60_000, 500_000),
    "too_many_cells-commas": lambda: b"Date,Read,\n" + (b"x" + b"," * 300 + b"\n") * 12_000,
    "too_many_habits-wide_header": lambda: _wide_header(400, 60_000),
    "zip_ratio-commas": _zip_bomb_of_commas,
    "too_many_checkins-in_two_megabytes": _many_checkins_cheaply,
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", sorted(PATHOLOGICAL))
def test_pathological_files_are_refused_quickly_and_write_nothing(engine, patricia, case):
    data = PATHOLOGICAL[case]()
    started = thread_time()
    with pytest.raises(TransferError) as info:
        import_file(engine, patricia, "Checkmarks.csv", data, now=NOW)
    assert info.value.code == case.split("-")[0]
    assert thread_time() - started < 5
    assert _row_counts(engine) == [0, 0, 0]


def test_a_refusal_names_the_limit_it_hit(engine, alice):
    with pytest.raises(TransferError) as info:
        import_file(engine, alice, "x.csv", _commas_then_short_rows(70_000, 1), now=NOW)
    assert (info.value.code, info.value.limit) == ("line_too_long", transfer.MAX_LINE_CHARS)


def test_reading_is_stopped_at_its_cpu_deadline(engine, patricia):
    data = _matrix([f"h{n}" for n in range(50)],
                   [((date(2026, 3, 27) - timedelta(days=d)).isoformat(), *["UNKNOWN"] * 50)
                    for d in range(2000)]).encode()
    with pytest.raises(TransferError) as info:
        import_file(engine, patricia, "Checkmarks.csv", data, now=NOW,
                    budget=transfer.Budget(seconds=0.0))
    assert (info.value.code, info.value.limit) == ("too_slow", 0)
    assert _row_counts(engine) == [0, 0, 0]
    assert import_file(engine, patricia, "Checkmarks.csv", data, now=NOW).habits_created == 50


def test_an_import_cannot_take_a_user_past_the_habit_limit(engine, patricia):
    with engine.begin() as conn:
        conn.execute(insert(Habit), [{"user_id": patricia, "name": f"Mine {n}", "position": n}
                                     for n in range(transfer.MAX_HABITS - 3)])
    before = _snapshot(engine)

    with pytest.raises(TransferError) as info:
        import_file(engine, patricia, "loop.zip", _loop_zip("habit_folders"), now=NOW)

    assert (info.value.code, info.value.limit) == ("too_many_habits_total", transfer.MAX_HABITS)
    assert _snapshot(engine) == before
    # Habits it already has do not count twice: matched ones are not new.
    with engine.begin() as conn:
        conn.execute(update(Habit).where(Habit.name == "Mine 0").values(name="Meditate"))
    assert import_file(engine, patricia, "loop.zip", _loop_zip("habit_folders"),
                       now=NOW).habits_created == 3


def _largest_loop_export(habits: int, days: int) -> bytes:
    """What Loop writes for `habits` habits kept `days` days: the matrix and a folder each."""
    header = f"{LOOP_HEADER}\n" + "".join(f"{n:03d},Habit {n},YES_NO,,,1,1,#000,,,,false\n"
                                          for n in range(1, habits + 1))
    dates = [(date(2026, 3, 27) - timedelta(days=d)).isoformat() for d in range(days)]
    mark = ["YES_MANUAL" if d % 20 == 0 else "UNKNOWN" for d in range(days)]
    files = {"Habits.csv": header,
             "Checkmarks.csv": _matrix([f"Habit {n}" for n in range(1, habits + 1)],
                                       [(day, *[mark[d]] * habits)
                                        for d, day in enumerate(dates)])}
    for n in range(1, habits + 1):
        files[f"{n:03d} Habit {n}/Checkmarks.csv"] = "Date,Value,Notes\n" + "".join(
            f"{day},{mark[d]},\n" for d, day in enumerate(dates))
        files[f"{n:03d} Habit {n}/Scores.csv"] = "Date,Score\n" + "".join(
            f"{day},0.5000\n" for day in dates)
    return _zip(files)


@pytest.mark.timeout(60)
def test_the_largest_real_loop_export_is_within_the_limits(engine, patricia):
    data = _largest_loop_export(transfer.MAX_HABITS, 3650)

    summary = import_file(engine, patricia, "loop.zip", data, now=NOW)

    assert (summary.habits_created, summary.checkins_imported) == (200, 200 * 183)


def test_an_import_cannot_take_a_user_past_the_check_in_limit(engine, patricia, monkeypatch):
    read = _habit(engine, patricia, HabitDraft("Meditate"))
    with engine.begin() as conn:
        conn.execute(insert(HabitCheckin), [
            {"habit_id": read, "user_id": patricia, "status": "done",
             "local_date": date(2020, 1, 1) + timedelta(days=n)} for n in range(30)])
    monkeypatch.setattr(writing, "MAX_USER_CHECKINS", 35)
    before = _snapshot(engine)

    with pytest.raises(TransferError) as info:
        import_file(engine, patricia, "loop.zip", _loop_zip("habit_folders"), now=NOW)

    assert (info.value.code, info.value.limit) == ("too_many_checkins_total", 35)
    assert _snapshot(engine) == before
    monkeypatch.setattr(writing, "MAX_USER_CHECKINS", 36)
    assert import_file(engine, patricia, "loop.zip", _loop_zip("habit_folders"),
                       now=NOW).checkins_imported == 6


def _early_riser(engine) -> int:
    """A Berlin user whose day starts at 04:00: 01:30 on the 27th is still the 26th."""
    with engine.begin() as conn:
        return conn.execute(insert(User).values(
            telegram_id=41, timezone="Europe/Berlin", day_start_hour=4)
            .returning(User.id)).scalar_one()


def test_imported_habits_start_at_the_users_day_start_on_their_first_day(engine):
    from habitbot.services.progress import local_day

    riser = _early_riser(engine)
    import_file(engine, riser, "loop.zip", _loop_zip("habit_folders"), now=NOW)
    with engine.connect() as conn:
        created = dict(conn.execute(select(Habit.name, Habit.created_at)).all())
    assert created["Meditate"] == datetime(2026, 3, 26, 3, 0, tzinfo=UTC)  # 04:00 in Berlin
    assert local_day(created["Meditate"], "Europe/Berlin", 4) == date(2026, 3, 26)


def test_an_existing_habit_made_after_midnight_is_not_backdated_by_its_own_day(engine):
    riser = _early_riser(engine)
    made = datetime(2026, 3, 27, 0, 30, tzinfo=UTC)  # 01:30 on the 27th: the user's 26th
    habit = svc.create_habit(engine, riser, HabitDraft("Meditate"), now=made)
    with engine.begin() as conn:
        conn.execute(update(Habit).where(Habit.id == habit.id).values(created_at=made))

    import_file(engine, riser, "Habits.csv", OLD_HABITS.encode(), now=NOW)
    import_file(engine, riser, "Checkmarks.csv",
                _matrix(["Meditate"], [("2026-03-26", "2")]).encode(), now=NOW)

    with engine.connect() as conn:
        assert conn.execute(select(Habit.created_at).where(Habit.id == habit.id)) \
            .scalar_one() == made
