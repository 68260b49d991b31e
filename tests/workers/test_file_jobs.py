"""File jobs (imports, exports) against real RQ burst workers in-process: they have their own
queue, taken after reminders, and at most one runs at a time across all workers, so a worker is
always free for reminders and payments. A user whose file finds another's job running is told
to send it again, and nothing of theirs is changed."""

from __future__ import annotations

import configparser
import pathlib

import pytest
from rq import Queue

from tests.services.test_transfer import _loop_zip
from tests.support.jobs import run_burst
from tests.workers.test_imports import ANNA, BEN, _counts, _told, _upload, _user
from workers import imports, queues, rq_settings

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def anna(engine, emu_client) -> int:
    return _user(engine, emu_client, ANNA, "ru")


@pytest.fixture
def ben(engine, emu_client) -> int:
    return _user(engine, emu_client, BEN, "en")


def test_file_jobs_have_their_own_queue_taken_after_reminders():
    assert queues.ALL == (queues.HIGH, queues.DEFAULT, queues.REMINDERS, queues.FILES)
    config = configparser.RawConfigParser()
    config.read(ROOT / "supervisord.conf")
    command = config.get("program:worker", "command").split()
    assert command[-len(queues.ALL):] == list(queues.ALL)
    assert rq_settings.QUEUES == list(queues.ALL)


def test_a_reminder_queued_after_an_upload_runs_before_it(runtime, emu_client, redis_conn,
                                                          ben):
    assert imports.enqueue(redis_conn, _upload(emu_client, BEN, _loop_zip("habit_folders"))) \
        == imports.STARTED
    reminder = Queue(queues.REMINDERS, connection=redis_conn).enqueue("builtins.len", "x")
    [upload] = Queue(queues.FILES, connection=redis_conn).get_jobs()

    run_burst(redis_conn, *queues.ALL)

    reminder.refresh()
    upload.refresh()
    assert reminder.ended_at is not None and upload.started_at is not None
    assert reminder.ended_at <= upload.started_at
    assert upload.return_value() == imports.IMPORTED


def test_a_second_users_upload_while_one_is_queued_is_asked_again_and_changes_nothing(
        runtime, engine, emu_client, redis_conn, anna, ben):
    data = _loop_zip("habit_folders")
    assert imports.enqueue(redis_conn, _upload(emu_client, ANNA, data)) == imports.STARTED
    assert imports.enqueue(redis_conn, _upload(emu_client, BEN, data)) == imports.FILES_BUSY
    assert imports.enqueue_export(redis_conn, BEN, "en") == imports.EXPORT_BUSY
    assert Queue(queues.FILES, connection=redis_conn).count == 1

    run_burst(redis_conn, queues.FILES)
    assert _counts(engine)[0] == 4  # Anna's habits only
    assert not redis_conn.exists(imports.FILES_LEASE)

    assert imports.enqueue(redis_conn, _upload(emu_client, BEN, data)) == imports.STARTED
    run_burst(redis_conn, queues.FILES)
    assert _told(emu_client, BEN)[-1].startswith("Import done.\n4 habits created")
    assert not redis_conn.exists(imports.FILES_LEASE)


def test_a_file_job_that_starts_while_another_runs_does_nothing_and_says_so(
        runtime, engine, emu_client, redis_conn, ben):
    data = _loop_zip("habit_folders")
    assert imports.enqueue(redis_conn, _upload(emu_client, BEN, data)) == imports.STARTED
    # Its own lease expired while it waited; another user's export took the lease.
    redis_conn.set(imports.FILES_LEASE, f"export-{ANNA}", ex=60)

    run_burst(redis_conn, queues.FILES)

    assert _told(emu_client, BEN) == [
        "I am busy with another person's file right now. Please send yours again in a minute."]
    assert _counts(engine) == (0, 0)
    assert redis_conn.get(imports.FILES_LEASE) == f"export-{ANNA}".encode()

    redis_conn.delete(imports.FILES_LEASE)
    assert imports.enqueue(redis_conn, _upload(emu_client, BEN, data)) == imports.STARTED
    run_burst(redis_conn, queues.FILES)
    assert _told(emu_client, BEN)[-1].startswith("Import done.\n4 habits created")


def test_an_export_takes_and_gives_back_the_lease(runtime, emu_client, redis_conn, ben):
    assert imports.enqueue_export(redis_conn, BEN, "en") == imports.EXPORT_STARTED
    assert redis_conn.get(imports.FILES_LEASE) == f"export-{BEN}".encode()

    run_burst(redis_conn, queues.FILES)

    assert not redis_conn.exists(imports.FILES_LEASE)
    assert len(emu_client.messages(BEN, sender="bot")) == 2  # the CSV and the JSON file
