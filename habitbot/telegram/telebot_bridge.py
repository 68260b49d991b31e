"""Route every pyTelegramBotAPI request through our sender (limiter, retries, timeouts).

pyTelegramBotAPI calls `apihelper.CUSTOM_REQUEST_SENDER(method, url, params=, files=, timeout=,
proxies=)` for each Bot API call; the URL ends with the API method name. We hand it to
`Sender.perform` in the interactive lane, so the bot's own polling and replies share the
budget and the 429 handling of the workers.
"""

from __future__ import annotations

from typing import Any

from telebot import apihelper

from habitbot.http_sessions import Response
from habitbot.telegram.limiter import INTERACTIVE
from habitbot.telegram.sender import Sender


def install(sender: Sender) -> None:
    def send(http_method: str, url: str, params: dict[str, Any] | None = None,
             files: dict[str, Any] | None = None, timeout: Any = None,
             proxies: Any = None, **_: Any) -> Response:
        api_method = url.rsplit("/", 1)[-1]
        read_timeout = None
        if isinstance(timeout, tuple):
            read_timeout = float(timeout[1])
        elif timeout:
            read_timeout = float(timeout)
        return sender.perform(api_method, params, files=files, lane=INTERACTIVE,
                              read_timeout=read_timeout)

    apihelper.CUSTOM_REQUEST_SENDER = send  # type: ignore[assignment]
    # Belt and braces: should the sender ever be bypassed, telebot still calls our API URL.
    apihelper.API_URL = sender.client.api_url + "/bot{0}/{1}"  # type: ignore[assignment]
    apihelper.FILE_URL = sender.client.api_url + "/file/bot{0}/{1}"  # type: ignore[assignment]
