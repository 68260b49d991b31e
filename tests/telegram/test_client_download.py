"""File downloads through the Bot API client: streamed, bounded, and every failure mapped to
a TelegramError (an unreachable file server too), so callers catch one thing."""

from __future__ import annotations

import base64
import socket

import pytest

from habitbot.telegram.client import BotApiClient
from habitbot.telegram.errors import TelegramError, TelegramNetworkError
from tests.conftest import TEST_TOKEN


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _path_of_upload(emu_client, client: BotApiClient, content: bytes) -> str:
    emu_client.add_user(42)
    sent = emu_client.inject_message(42, None, document={
        "file_name": "x.csv", "content_base64": base64.b64encode(content).decode()})
    document = next(m for m in emu_client.messages(42, sender="user")
                    if m["message_id"] == sent["message_id"])["document"]
    answer = client.raw_request("getFile", {"file_id": document["file_id"]})
    return BotApiClient.parse_response("getFile", answer)["file_path"]


def test_a_file_is_downloaded_within_its_bound(emulator, emu_client):
    client = BotApiClient(emulator.url, TEST_TOKEN)
    path = _path_of_upload(emu_client, client, b"a,b\n" * 1000)

    assert client.download_file(path, 4000) == b"a,b\n" * 1000
    with pytest.raises(ValueError, match="too large"):
        client.download_file(path, 3999)
    with pytest.raises(ValueError, match="bad file path"):
        client.download_file("../" + path, 4000)
    with pytest.raises(TelegramError) as info:
        client.download_file("documents/missing.csv", 4000)
    assert info.value.code == 404


def test_an_unreachable_file_server_is_a_network_error():
    client = BotApiClient(f"http://127.0.0.1:{_closed_port()}", TEST_TOKEN)

    with pytest.raises(TelegramNetworkError) as info:
        client.download_file("documents/file_1.csv", 4000)
    assert info.value.code == 0 and info.value.unreachable
