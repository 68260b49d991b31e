"""Route every pyTelegramBotAPI request through our sender (limiter, retries, timeouts).

pyTelegramBotAPI calls `apihelper.CUSTOM_REQUEST_SENDER(method, url, params=, files=, timeout=,
proxies=)` for each Bot API call; the URL ends with the API method name. We hand it to
`Sender.perform` in the interactive lane, so the bot's own polling and replies share the
budget and the 429 handling of the workers.

With `replies` (the bot's `DeferredReplies`), a reply Telegram cannot take now is kept and
delivered later; telebot is then answered as if it had been sent — a message with
`message_id` 0, or `true` for an edit — so the handler goes on as it would have (its other
replies are kept behind this one) and is never run again.
"""

from __future__ import annotations

import json
import time
from typing import Any

from telebot import apihelper

from habitbot.http_sessions import ApiResponse, Response
from habitbot.telegram.deferred import DeferredReplies
from habitbot.telegram.limiter import INTERACTIVE
from habitbot.telegram.sender import Sender


def kept_answer(method: str, params: dict[str, Any] | None) -> ApiResponse:
    """What Telegram would have answered, for a reply kept for later."""
    result: Any = True
    if method.lower().startswith("send"):
        chat_id = (params or {}).get("chat_id")
        try:
            chat_id = int(chat_id)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
        result = {"message_id": 0, "date": int(time.time()),
                  "chat": {"id": chat_id, "type": "private"}}
    body = json.dumps({"ok": True, "result": result}).encode()
    return ApiResponse(200, "OK", body, {"Content-Type": "application/json"})


def install(sender: Sender, replies: DeferredReplies | None = None) -> None:
    def send(http_method: str, url: str, params: dict[str, Any] | None = None,
             files: dict[str, Any] | None = None, timeout: Any = None,
             proxies: Any = None, **_: Any) -> Response:
        api_method = url.rsplit("/", 1)[-1]
        read_timeout = None
        if isinstance(timeout, tuple):
            read_timeout = float(timeout[1])
        elif timeout:
            read_timeout = float(timeout)
        if replies is None:
            return sender.perform(api_method, params, files=files, lane=INTERACTIVE,
                                  read_timeout=read_timeout)
        response = replies.send(api_method, params, files=files, read_timeout=read_timeout)
        return kept_answer(api_method, params) if response is None else response

    apihelper.CUSTOM_REQUEST_SENDER = send  # type: ignore[assignment]
    # Belt and braces: should the sender ever be bypassed, telebot still calls our API URL.
    apihelper.API_URL = sender.client.api_url + "/bot{0}/{1}"  # type: ignore[assignment]
    apihelper.FILE_URL = sender.client.api_url + "/file/bot{0}/{1}"  # type: ignore[assignment]
