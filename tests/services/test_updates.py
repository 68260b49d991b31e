"""The record of taken Telegram updates: one claim wins, a finished update is a duplicate, an
unfinished one is interrupted, and another bot's update ids are its own."""

from __future__ import annotations

import threading

from alembic import command
from sqlalchemy import inspect

from habitbot.db import make_engine
from habitbot.services import schema, updates
from habitbot.services.schema import check_schema, run_deploy_gate

BOT = 123456
OTHER_BOT = 654321


def test_a_new_update_is_claimed_once_and_then_known_as_handled(engine):
    assert updates.claim(engine, BOT, 1, "message") == updates.NEW
    assert updates.claim(engine, BOT, 1, "message") == updates.INTERRUPTED
    updates.finish(engine, BOT, 1)
    assert updates.claim(engine, BOT, 1, "message") == updates.HANDLED


def test_update_ids_of_another_bot_are_its_own(engine):
    assert updates.claim(engine, BOT, 7, "message") == updates.NEW
    assert updates.claim(engine, OTHER_BOT, 7, "message") == updates.NEW
    assert updates.bot_id_of("123456:ABC-def") == BOT


def test_concurrent_claims_of_one_update_give_it_to_exactly_one(engine):
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait(10)
        outcomes.append(updates.claim(engine, BOT, 42, "successful_payment"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == [updates.INTERRUPTED] * 7 + [updates.NEW]


def test_an_oversized_kind_is_cut_to_fit(engine):
    assert updates.claim(engine, BOT, 9, "x" * 500) == updates.NEW


def test_migration_0008_creates_the_record_and_reverts(scratch_database):
    scratch = make_engine(scratch_database, "cli")
    try:
        assert run_deploy_gate(scratch).ok
        with scratch.connect() as conn:
            assert "processed_updates" in inspect(conn).get_table_names()
        command.downgrade(schema.alembic_config_for(scratch_database), "0007")
        with scratch.connect() as conn:
            assert "processed_updates" not in inspect(conn).get_table_names()
        assert not check_schema(scratch).ok
        assert run_deploy_gate(scratch).ok
        assert updates.claim(scratch, BOT, 1, "message") == updates.NEW
    finally:
        scratch.dispose()
