"""The operator command line: clear output, clear errors, non-zero exit on failure."""

from __future__ import annotations

import subprocess
import sys

import pytest

from habitbot.services.conversations import ConversationStore


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "habitbot.cli", *args],
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                          text=True, timeout=60)


def test_fsm_reset_forgets_a_stuck_dialog(redis_conn, redis_url):
    ConversationStore(redis_conn).set(4242, "tz:ask", {"flow": "onb"})
    result = _run("fsm", "reset", "4242", REDIS_URL=redis_url)
    assert result.returncode == 0
    assert "conversation of user 4242 reset (was in state 'tz:ask')" in result.stdout
    assert ConversationStore(redis_conn).get(4242).state is None
    again = _run("fsm", "reset", "4242", REDIS_URL=redis_url)
    assert again.returncode == 0 and "had no conversation in progress" in again.stdout


@pytest.mark.parametrize("bad", ["abc", "-5", "0", "1e9", "99999999999999999999999"])
def test_fsm_reset_refuses_malformed_ids(bad, redis_url):
    result = _run("fsm", "reset", bad, REDIS_URL=redis_url)
    assert result.returncode == 2 and "not a Telegram user id" in result.stderr


def test_fsm_reset_with_redis_down_fails_clearly(redis_proxy, redis_url):
    redis_proxy.set_mode("refuse")
    result = _run("fsm", "reset", "1", REDIS_URL=redis_proxy.url_for(redis_url))
    assert result.returncode == 1 and "redis unreachable" in result.stderr


def test_every_command_has_help():
    for args in (["--help"], ["deploy-gate", "--help"], ["check-schema", "--help"],
                 ["fsm", "reset", "--help"], ["alert", "test", "--help"]):
        result = _run(*args)
        assert result.returncode == 0 and "usage: habitbot" in result.stdout


def test_missing_configuration_is_one_line():
    result = _run("check-schema")
    assert result.returncode == 2
    assert result.stderr.strip() == ("FAIL: configuration error: DATABASE_URL is not set: "
                                     "expected a postgresql:// URL")
