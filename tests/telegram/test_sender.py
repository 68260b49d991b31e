"""The sender against the Telegram emulator: 429, 403, 400, 5xx, timeouts."""

from __future__ import annotations

import socket

import pytest
import redis

from habitbot.telegram.client import BotApiClient
from habitbot.telegram.errors import TelegramError, TelegramNetworkError
from habitbot.telegram.limiter import BULK, Limits, RateLimiter
from habitbot.telegram.sender import ChatBlocked, Sender, metrics
from tests.conftest import TEST_TOKEN

ALICE = 2001


@pytest.fixture
def blocked_calls():
    return []


@pytest.fixture
def sender(emulator, emu_client, redis_conn, blocked_calls):
    emu_client.add_user(ALICE, first_name="Alice")
    client = BotApiClient(emulator.url, TEST_TOKEN, read_timeout=2)
    limiter = RateLimiter(redis_conn, Limits(global_rate=1000, chat_rate=100, chat_burst=50,
                                             global_burst=100))
    s = Sender(client, redis_conn, limiter, on_blocked=blocked_calls.append,
               sleep=lambda seconds: None)
    yield s
    client.close()


def _requests(emu_client, method="sendMessage") -> int:
    return emu_client.stats()["requests"].get(method, 0)


def test_send_message_reaches_the_chat_and_is_counted(sender, emu_client, redis_conn):
    message = sender.send_message(ALICE, "hello")
    assert message["text"] == "hello"
    assert emu_client.messages(ALICE)[-1]["text"] == "hello"
    assert metrics(redis_conn)["interactive:sent"] == 1


def test_429_pauses_everyone_and_is_retried(sender, emu_client, redis_conn):
    emu_client.add_fault("429", count=1, retry_after=1)
    assert sender.send_message(ALICE, "after pause", lane=BULK)["text"] == "after pause"
    assert _requests(emu_client) == 2
    assert metrics(redis_conn)["bulk:rate_limited"] == 1  # written at once
    assert "bulk:sent" not in metrics(redis_conn)  # added up, written by flush_counters
    sender.flush_counters()
    assert metrics(redis_conn)["bulk:sent"] == 1
    assert redis_conn.exists("habitbot:tg:pause_until")


def test_blocked_user_is_marked_and_not_contacted_again(sender, emu_client, blocked_calls):
    emu_client.block(ALICE)
    response = sender.perform("sendMessage", {"chat_id": ALICE, "text": "hi"})
    assert response.status_code == 403
    assert blocked_calls == [ALICE]
    before = _requests(emu_client)
    with pytest.raises(ChatBlocked):
        sender.send_message(ALICE, "again")
    assert _requests(emu_client) == before
    emu_client.unblock(ALICE)
    sender.unblock(ALICE)
    assert sender.send_message(ALICE, "welcome back")["text"] == "welcome back"


@pytest.mark.parametrize("text", ["", "x" * 5000])
def test_bad_request_is_not_retried(sender, emu_client, redis_conn, text):
    with pytest.raises(TelegramError) as info:
        sender.send_message(ALICE, text)
    assert info.value.code == 400
    assert _requests(emu_client) == 1
    assert metrics(redis_conn)["interactive:failed_permanent"] == 1


def test_5xx_is_retried_then_succeeds(sender, emu_client, redis_conn):
    emu_client.add_fault("5xx", count=2, status=502)
    assert sender.send_message(ALICE, "third time")["text"] == "third time"
    assert _requests(emu_client) == 3
    assert metrics(redis_conn)["interactive:retried"] == 2


def test_timeouts_are_retried(sender, emu_client):
    emu_client.add_fault("timeout", count=1)
    assert sender.send_message(ALICE, "late")["text"] == "late"


def test_persistent_outage_gives_up_after_a_bounded_number_of_attempts(sender, emu_client,
                                                                      redis_conn):
    emu_client.add_fault("outage")
    with pytest.raises(TelegramNetworkError):
        sender.send_message(ALICE, "nobody home")
    assert metrics(redis_conn)["interactive:failed_transient"] == 1


def test_redis_down_still_sends(emulator, emu_client, redis_proxy, redis_url):
    emu_client.add_user(ALICE, first_name="Alice")
    conn = redis.Redis.from_url(redis_proxy.url_for(redis_url), socket_timeout=0.5,
                                socket_connect_timeout=0.5)
    client = BotApiClient(emulator.url, TEST_TOKEN)
    sender = Sender(client, conn, RateLimiter(conn), sleep=lambda s: None)
    redis_proxy.set_mode("refuse")
    try:
        assert sender.send_message(ALICE, "no redis")["text"] == "no redis"
    finally:
        client.close()
        conn.close()


def test_an_unreachable_api_is_a_network_error_after_the_retries(redis_conn):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = BotApiClient(f"http://127.0.0.1:{port}", TEST_TOKEN, connect_timeout=0.5)
    sender = Sender(client, redis_conn, RateLimiter(redis_conn), sleep=lambda s: None)
    try:
        with pytest.raises(TelegramNetworkError):
            sender.send_message(ALICE, "nobody listens", lane=BULK)
    finally:
        client.close()
    sender.flush_counters()
    assert metrics(redis_conn)["bulk:failed_transient"] == 1


def test_files_go_as_multipart_and_the_rest_as_json(sender, emu_client):
    """Two paths to the same API: uploads through requests, plain calls straight as JSON."""
    document = sender.call("sendDocument", {"chat_id": ALICE, "caption": "export"},
                           files={"document": ("habits.json", b"{}", "application/json")})
    assert document["document"]["file_name"] == "habits.json"
    markup = {"inline_keyboard": [[{"text": "ok", "callback_data": "x"}]]}
    message = sender.call("sendMessage", {"chat_id": ALICE, "text": "json",
                                          "reply_markup": markup, "disable_notification": True})
    assert message["reply_markup"] == markup
