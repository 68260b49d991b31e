"""The one log format: JSON lines with the context fields, secrets scrubbed, the RQ job id added
inside a job, and the phrases the runbook tells operators to grep for."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from rq import Queue
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from habitbot.logs import JsonFormatter
from habitbot.models import User
from tests.support.jobs import run_burst

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK_PHRASES = ("Startup complete", "Scheduler started", "Payment completed",
                   "Idempotent: payment", "already completed", "Telegram 429",
                   "habit_reminders: sent")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def _capture() -> tuple[logging.Logger, Lines]:
    handler = Lines()
    logger = logging.getLogger("habitbot.test_logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler


def test_a_line_is_json_with_the_context_fields():
    logger, lines = _capture()
    logger.info("Payment completed", extra={"payment_id": 42, "user_id": 7, "update_id": 9})
    [line] = lines.lines
    assert line["msg"] == "Payment completed" and line["program"] == "test"
    assert (line["payment_id"], line["user_id"], line["update_id"]) == (42, 7, 9)
    assert line["level"] == "INFO" and line["ts"].endswith("+00:00")
    assert "job_id" not in line  # not inside a job


def test_tokens_passwords_and_card_numbers_never_reach_the_log():
    logger, lines = _capture()
    token = "123456789:AAH-secret_token_value_0123456789abcd"
    logger.warning(f"call to https://api.telegram.org/bot{token}/getMe failed",
                   extra={"url": "postgresql://habitbot:s3cret-pw@db:5432/habitbot",
                          "card": "4111 1111 1111 1111"})
    try:
        raise RuntimeError(f"token {token}")
    except RuntimeError:
        logger.exception("boom")
    text = json.dumps(lines.lines)
    for secret in ("AAH-secret_token_value", "s3cret-pw", "4111 1111 1111 1111"):
        assert secret not in text
    assert "<token>" in text and "<hidden>@" in text and "<card>" in text


def log_inside_a_job() -> None:
    logging.getLogger("habitbot.test_logs").info("inside a job")


def test_inside_an_rq_job_the_job_id_is_added(redis_conn):
    _, lines = _capture()
    job = Queue("default", connection=redis_conn).enqueue(log_inside_a_job)
    run_burst(redis_conn, "default")
    [line] = [entry for entry in lines.lines if entry["msg"] == "inside a job"]
    assert line["job_id"] == job.id


def test_the_phrases_the_runbook_greps_for_are_written_by_the_code():
    code = "\n".join(path.read_text() for folder in ("habitbot", "workers", "webhooks")
                     for path in (ROOT / folder).rglob("*.py"))
    for phrase in RUNBOOK_PHRASES:
        assert phrase in code, phrase
    assert re.search(r'f"habit_reminders: sent \{', code)


def test_database_errors_never_carry_the_values_of_the_statement(engine):
    """A failed statement is logged by whoever catches it: its text says which statement,
    never the values (users' texts, e-mails, payment data)."""
    secret = "private-habit-name@example.com"
    with engine.begin() as conn:
        conn.execute(insert(User).values(telegram_id=4242))
    with pytest.raises(IntegrityError) as failed, engine.begin() as conn:
        conn.execute(insert(User).values(telegram_id=4242, first_name=secret))
    assert secret not in str(failed.value)
    assert "hidden due to hide_parameters" in str(failed.value)


def test_the_values_postgresql_repeats_in_its_detail_are_scrubbed(engine):
    """PostgreSQL's own DETAIL quotes the refused row or key; the log keeps only its shape."""
    logger, lines = _capture()
    secret = "private (habit). name@example.com"
    with engine.begin() as conn:
        conn.execute(insert(User).values(telegram_id=987654321))
    for values in ({"telegram_id": None, "first_name": secret},
                   {"telegram_id": 987654321, "username": secret}):
        try:
            with engine.begin() as conn:
                conn.execute(insert(User).values(**values))
        except IntegrityError:
            logger.exception("could not save")
    text = json.dumps(lines.lines)
    assert "name@example.com" not in text and "987654321" not in text
    assert "Failing row contains (<hidden>)" in text
    assert "Key (telegram_id)=(<hidden>) already exists" in text
