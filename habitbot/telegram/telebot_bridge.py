"""Route every pyTelegramBotAPI request through our client (pooled session, timeouts).

pyTelegramBotAPI calls `apihelper.CUSTOM_REQUEST_SENDER(method, url, params=, files=, timeout=,
proxies=)` for each Bot API call; the URL ends with the API method name. We send it with
`BotApiClient.raw_request`, so the bot's own polling and replies use the same door as the
workers.
"""

from __future__ import annotations

from typing import Any

import requests
from telebot import apihelper

from habitbot.telegram.client import BotApiClient


def install(client: BotApiClient) -> None:
    def sender(http_method: str, url: str, params: dict[str, Any] | None = None,
               files: dict[str, Any] | None = None, timeout: Any = None,
               proxies: Any = None, **_: Any) -> requests.Response:
        api_method = url.rsplit("/", 1)[-1]
        read_timeout = None
        if isinstance(timeout, tuple):
            read_timeout = float(timeout[1])
        elif timeout:
            read_timeout = float(timeout)
        return client.raw_request(api_method, params, files, read_timeout)

    apihelper.CUSTOM_REQUEST_SENDER = sender  # type: ignore[assignment]
    # Belt and braces: should the sender ever be bypassed, telebot still calls our API URL.
    apihelper.API_URL = client.api_url + "/bot{0}/{1}"  # type: ignore[assignment]
    apihelper.FILE_URL = client.api_url + "/file/bot{0}/{1}"  # type: ignore[assignment]
