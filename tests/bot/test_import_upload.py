"""Sending a file to the bot: the handler checks its size and type, queues the import and
answers at once; the file is read by a worker job, never in the bot's handler threads."""

from __future__ import annotations

import base64

import pytest
from rq import Queue
from sqlalchemy import func, select, update

from habitbot.models import Habit, User
from tests.services.test_transfer import _commas_then_short_rows, _loop_zip
from tests.support.jobs import install
from tests.workers.test_imports import run_imports
from workers import queues


@pytest.fixture
def kim(chat_with, engine, runtime, monkeypatch):
    """An English-speaking user past onboarding; jobs run here use the bot's runtime."""
    install(runtime, monkeypatch)
    chat = chat_with(5301, "Kim", "en")
    chat.say("/help")
    with engine.begin() as conn:
        conn.execute(update(User).where(User.telegram_id == chat.user_id)
                     .values(onboarded_at=User.created_at))
    return chat


def _document(content: bytes, name: str = "loop.zip", **extra: str) -> dict:
    return {"file_name": name, "content_base64": base64.b64encode(content).decode(), **extra}


def _habit_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Habit)).scalar_one()


def _queued(runtime) -> int:
    return Queue(queues.FILES, connection=runtime.redis).count


@pytest.mark.timeout(30)
def test_an_upload_is_answered_at_once_and_imported_by_a_worker(kim, engine, runtime):
    reply = kim.say(None, document=_document(_loop_zip("habit_folders")))

    assert reply["text"] == "Importing the file… I will write when it is done."
    assert _habit_count(engine) == 0 and _queued(runtime) == 1
    run_imports(runtime.redis)
    done = kim.emu.wait_for_message(kim.user_id, after_message_id=reply["message_id"])
    assert done["text"].startswith("Import done.\n4 habits created")
    assert _habit_count(engine) == 4


@pytest.mark.timeout(30)
def test_a_pathological_file_does_not_hold_the_bot(kim, engine, runtime):
    # Hours of CPU for the parser this replaced, inline in the handler's thread.
    reply = kim.say(None, document=_document(_commas_then_short_rows(60_000, 200_000),
                                             "Checkmarks.csv"))

    assert reply["text"] == "Importing the file… I will write when it is done."
    assert kim.say("/help")["text"]  # the bot answers the next message meanwhile
    run_imports(runtime.redis)
    refused = kim.emu.wait_for_message(kim.user_id, after_message_id=reply["message_id"],
                                       predicate=lambda m: "columns" in m["text"])
    assert refused["text"] == "A row of the file has too many columns (at most 402)."
    assert _habit_count(engine) == 0


def test_the_same_file_sent_twice_is_imported_once(kim, engine, runtime):
    data = _loop_zip("habit_folders")
    kim.say(None, document=_document(data))

    again = kim.say(None, document=_document(data))
    assert again["text"] == "This file is already being imported: I will write when it is done."
    run_imports(runtime.redis)
    assert kim.say(None, document=_document(data))["text"] == (
        "This file has just been imported: see /habits.")

    assert _queued(runtime) == 0 and _habit_count(engine) == 4
    texts = [m["text"] for m in kim.emu.messages(kim.user_id, sender="bot")]
    assert sum(t.startswith("Import done.") for t in texts) == 1


@pytest.mark.parametrize(("document", "expected"), [
    (dict(content=b"x" * (6 << 20), name="big.csv"), "The file is too large: at most 5 MB."),
    (dict(content=b"\xff\xd8\xff" * 100, name="photo.jpg"), "I cannot read this file."),
    (dict(content=b"Date,Read,\n", name="clip", mime_type="video/mp4"),
     "I cannot read this file."),
])
def test_files_we_cannot_import_are_refused_without_a_job(kim, engine, runtime, document,
                                                          expected):
    content, name = document.pop("content"), document.pop("name")

    reply = kim.say(None, document=_document(content, name, **document))

    assert reply["text"].startswith(expected)
    assert _queued(runtime) == 0 and _habit_count(engine) == 0


def test_without_the_queue_the_user_is_told_to_try_later(kim, runtime, monkeypatch):
    import redis

    from workers import imports

    def unreachable(*args, **kwargs):
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(imports.Queue, "enqueue", unreachable)
    reply = kim.say(None, document=_document(_loop_zip("habit_folders")))
    assert reply["text"] == "Import is not available right now."


def test_export_is_prepared_by_a_worker_once(kim, engine, runtime):
    kim.say("/new Read")
    preparing = kim.say("/export")
    assert preparing["text"] == "Preparing your export… the files will follow in a moment."
    assert kim.say("/export")["text"] == preparing["text"]
    assert _queued(runtime) == 1

    run_imports(runtime.redis)
    docs = [m for m in kim.emu.messages(kim.user_id, sender="bot") if m["kind"] == "document"]
    assert [d["document"]["file_name"].rsplit(".", 1)[1] for d in docs] == ["csv", "json"]
    assert docs[1]["text"].startswith("Your habits and check-ins.")
    assert kim.say("/export")["text"] == preparing["text"] and _queued(runtime) == 1


def test_an_export_that_fails_tells_the_user(kim, runtime):
    kim.emu.add_fault("401", methods=["sendDocument"])
    preparing = kim.say("/export")
    run_imports(runtime.redis)

    failed = kim.emu.wait_for_message(kim.user_id, after_message_id=preparing["message_id"])
    assert failed["text"] == "The export failed. Please try again a little later."
