"""Import jobs run in-process (SimpleWorker) against the real database, Redis and the Telegram
emulator: the file is downloaded through the Bot API, imported within the limits, and the
user is told the outcome in their language — imported, refused, failed or stopped."""

from __future__ import annotations

import base64
import io
import threading
import zipfile

import pytest
from rq import Queue
from rq.registry import FailedJobRegistry
from sqlalchemy import func, insert, select

from habitbot.models import Habit, HabitCheckin, User
from habitbot.services import transfer
from habitbot.services.transfer import writing
from tests.services.test_transfer import LOOP_HABITS, _loop_zip
from tests.support.jobs import run_burst
from workers import imports, queues

ANNA = 7001   # writes in Russian
BEN = 7002    # writes in English


@pytest.fixture
def anna(engine, emu_client) -> int:
    return _user(engine, emu_client, ANNA, "ru")


@pytest.fixture
def ben(engine, emu_client) -> int:
    return _user(engine, emu_client, BEN, "en")


def _user(engine, emu_client, telegram_id: int, language: str) -> int:
    emu_client.add_user(telegram_id, first_name=f"u{telegram_id}", language_code=language)
    with engine.begin() as conn:
        return conn.execute(insert(User).values(
            telegram_id=telegram_id, language=language, timezone="Europe/Berlin",
            premium_ends_at=func.now() + func.make_interval(0, 0, 0, 30))
            .returning(User.id)).scalar_one()


def _upload(emu_client, telegram_id: int, content: bytes,
            name: str = "loop.zip") -> imports.Upload:
    """The user sends `content` as a document; the upload as the bot would see it."""
    sent = emu_client.inject_message(telegram_id, None, document={
        "file_name": name, "content_base64": base64.b64encode(content).decode()})
    message = next(m for m in emu_client.messages(telegram_id, sender="user")
                   if m["message_id"] == sent["message_id"])
    document = message["document"]
    return imports.Upload(telegram_id, "en", document["file_id"], document["file_unique_id"],
                          name)


def run_imports(redis_conn) -> None:
    run_burst(redis_conn, queues.FILES)


def _told(emu_client, telegram_id: int) -> list[str]:
    return [m["text"] for m in emu_client.messages(telegram_id, sender="bot")]


def _counts(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(Habit)).scalar_one(),
                conn.execute(select(func.count()).select_from(HabitCheckin)).scalar_one())


def _commas_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Habits.csv", LOOP_HABITS)
        archive.writestr("Checkmarks.csv", b"Date,Read,\n2026-03-01,2" + b"," * (12 << 20)
                         + b"\n" + b"x,1\n" * 1_500_000)
    return buffer.getvalue()


def test_an_upload_is_downloaded_imported_and_the_counts_told(runtime, engine, emu_client,
                                                               redis_conn, ben):
    upload = _upload(emu_client, BEN, _loop_zip("habit_folders"))

    assert imports.enqueue(redis_conn, upload) == imports.STARTED
    run_imports(redis_conn)

    text = _told(emu_client, BEN)[-1]
    assert text.startswith("Import done.\n4 habits created\n0 habits matched existing ones\n")
    assert "check-ins imported" in text and "See /stats" in text
    assert _counts(engine)[0] == 4


def test_a_zip_bomb_of_commas_is_refused_in_russian_and_writes_nothing(
        runtime, engine, emu_client, redis_conn, anna):
    bomb = _commas_bomb()
    assert len(bomb) < 100_000

    imports.enqueue(redis_conn, _upload(emu_client, ANNA, bomb))
    run_imports(redis_conn)

    assert _told(emu_client, ANNA) == [
        "ZIP-файл сжат слишком плотно для экспорта: распакованный, он больше исходного более "
        "чем в 400 раз."]
    assert _counts(engine) == (0, 0)


@pytest.mark.parametrize(("language", "expected"), [
    ("en", "The file has too many check-ins (at most 100,000)."),
    ("ru", "В файле слишком много отметок (не больше 100\u00a0000)."),
])
def test_every_refusal_names_its_limit_in_the_users_language(language, expected):
    from habitbot.i18n import Translator

    assert imports.refusal_text(Translator(language), "too_many_checkins",
                                transfer.MAX_CHECKINS) == expected


def test_every_refusal_the_service_raises_has_its_own_message():
    import pathlib
    import re

    package = pathlib.Path(transfer.__file__).parent
    raised = {code for path in package.glob("*.py")
              for code in re.findall(r'TransferError\("(\w+)"', path.read_text())}
    generic = {"bad_zip", "unknown_archive", "not_csv_or_zip", "bad_encoding", "bad_csv",
               "bad_json", "unknown_format", "unsupported_version", "unknown_columns", "empty"}
    assert raised - generic == set(imports.REFUSALS)
    for code, message in imports.REFUSALS.items():
        assert ("{limit}" in message) == (code != "send_loop_zip"), code


def test_the_same_file_is_imported_once(runtime, engine, emu_client, redis_conn, ben):
    data = _loop_zip("habit_folders")
    first, again = _upload(emu_client, BEN, data), _upload(emu_client, BEN, data)
    assert first.file_unique_id == again.file_unique_id != ""

    assert imports.enqueue(redis_conn, first) == imports.STARTED
    assert imports.enqueue(redis_conn, again) == imports.RUNNING
    assert Queue(queues.FILES, connection=redis_conn).count == 1
    run_imports(redis_conn)
    assert imports.enqueue(redis_conn, again) == imports.DONE_RECENTLY
    run_imports(redis_conn)

    assert sum(t.startswith("Import done.") for t in _told(emu_client, BEN)) == 1
    assert _counts(engine)[0] == 4


def test_one_import_per_user_at_a_time(runtime, engine, emu_client, redis_conn, ben, anna):
    first = _upload(emu_client, BEN, _loop_zip("habit_folders"))
    second = _upload(emu_client, BEN, _loop_zip("top_level_only"))
    assert first.file_unique_id != second.file_unique_id

    assert imports.enqueue(redis_conn, first) == imports.STARTED
    assert imports.enqueue(redis_conn, second) == imports.BUSY
    run_imports(redis_conn)

    assert imports.enqueue(redis_conn, second) == imports.STARTED
    run_imports(redis_conn)
    assert _told(emu_client, BEN)[-1].startswith("Import done.\n0 habits created\n4 habits")


def test_a_refused_file_can_be_sent_again_at_once(runtime, engine, emu_client, redis_conn,
                                                  ben):
    with engine.begin() as conn:
        conn.execute(insert(Habit), [{"user_id": ben, "name": f"Mine {n}", "position": n}
                                     for n in range(transfer.MAX_HABITS)])
    upload = _upload(emu_client, BEN, _loop_zip("habit_folders"))
    imports.enqueue(redis_conn, upload)
    run_imports(redis_conn)
    assert _told(emu_client, BEN)[-1] == ("With this file you would have more than 200 habits. "
                                          "Delete some first: /habits.")

    assert imports.enqueue(redis_conn, upload) == imports.STARTED


def test_an_import_that_fails_tells_the_user_and_writes_nothing(
        runtime, engine, emu_client, redis_conn, ben, monkeypatch):
    def connection_lost(conn, rows):
        raise RuntimeError("connection lost")

    working = writing._insert_checkins
    monkeypatch.setattr(writing, "_insert_checkins", connection_lost)
    upload = _upload(emu_client, BEN, _loop_zip("habit_folders"))
    imports.enqueue(redis_conn, upload)
    run_imports(redis_conn)

    assert _told(emu_client, BEN) == [
        "The import failed and nothing was changed. Please send the file again a little later."]
    assert _counts(engine) == (0, 0)
    assert FailedJobRegistry(queues.FILES, connection=redis_conn).count == 1
    monkeypatch.setattr(writing, "_insert_checkins", working)
    assert imports.enqueue(redis_conn, upload) == imports.STARTED
    # Its slot was given back: another file may follow at once.
    run_imports(redis_conn)
    other = _upload(emu_client, BEN, _loop_zip("top_level_only"))
    assert imports.enqueue(redis_conn, other) == imports.STARTED


@pytest.mark.timeout(60)
def test_an_import_stopped_at_its_time_limit_tells_the_user_and_writes_nothing(
        runtime, engine, emu_client, redis_conn, anna, monkeypatch):
    # The writing of check-ins outlasts the job's limit whatever the machine's speed (a real
    # import racing a 1 s limit lost or won by the load on the machine).
    def outlasting_the_limit(conn, rows):
        threading.Event().wait(30)  # never set: only the job's time limit ends the wait

    monkeypatch.setattr(imports, "JOB_TIMEOUT", 1)
    monkeypatch.setattr(writing, "_insert_checkins", outlasting_the_limit)
    imports.enqueue(redis_conn, _upload(emu_client, ANNA, _loop_zip("habit_folders")))
    run_imports(redis_conn)

    assert _told(emu_client, ANNA) == [
        "Импорт шёл слишком долго и был остановлен; ничего не изменилось. Пришлите файл "
        "поменьше."]
    assert _counts(engine) == (0, 0)
    assert imports.enqueue(redis_conn, _upload(emu_client, ANNA, b"other")) == imports.STARTED


def test_a_file_telegram_will_not_give_is_a_download_failure(runtime, emu_client, redis_conn,
                                                             ben):
    upload = imports.Upload(BEN, "en", "no-such-file", "x", "loop.zip")
    imports.enqueue(redis_conn, upload)
    run_imports(redis_conn)

    assert _told(emu_client, BEN) == ["I could not download the file. Please send it again."]
