"""HTTP to the Bot API: one pooled session per thread, explicit connect/read timeouts, and
the mapping of an answer to a result or a `TelegramError`. `telegram.sender.Sender` adds the
shared rate limit, retries and error handling on top; nothing else speaks HTTP to Telegram.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import requests

from habitbot.http_sessions import NETWORK_ERRORS, DirectHttp, Response, ThreadSessions
from habitbot.telegram.errors import TelegramError, TelegramNetworkError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.05
READ_TIMEOUT = 10.0


def _encode(params: dict[str, Any]) -> dict[str, Any]:
    """Telegram wants nested objects (reply_markup, …) as JSON strings in form fields."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, dict | list):
            out[key] = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = value
    return out


class BotApiClient:
    """A Bot API client bound to one token; thread-safe (one requests.Session per thread)."""

    def __init__(self, api_url: str, token: str, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT):
        self.api_url = api_url.rstrip("/")
        self._base = f"{self.api_url}/bot{token}/"
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._sessions = ThreadSessions(requests.utils.get_environ_proxies(self.api_url))
        # Calls without files go as JSON straight through urllib3 (thread-safe pool): requests
        # costs about a millisecond of CPU per call more, which caps a reminder burst. Behind
        # a proxy from the environment every call takes the requests path, which knows it.
        self._direct: DirectHttp | None = None
        if not requests.utils.get_environ_proxies(self.api_url):
            self._direct = DirectHttp()

    def close(self) -> None:
        """Close the connections of every thread (at process stop)."""
        self._sessions.close()
        if self._direct is not None:
            self._direct.clear()

    def raw_request(self, method: str, params: dict[str, Any] | None = None,
                    files: dict[str, Any] | None = None,
                    read_timeout: float | None = None) -> Response:
        """One POST on a pooled connection with our timeouts; errors (NETWORK_ERRORS) are the
        caller's to map."""
        if files is None and self._direct is not None:
            return self._direct.request(
                "POST", self._base + method,
                (self._connect_timeout, read_timeout or self._read_timeout),
                json_body={k: v for k, v in (params or {}).items() if v is not None})
        timeout = (self._connect_timeout, read_timeout or self._read_timeout)
        return self._sessions.get().post(self._base + method, data=_encode(params or {}),
                                    files=files, timeout=timeout)

    def download_file(self, file_path: str, max_bytes: int) -> bytes:
        """A file from getFile's file_path, refused past `max_bytes` (streamed, never whole)."""
        if ".." in file_path or file_path.startswith("/"):
            raise ValueError("bad file path")
        url = self._base.replace("/bot", "/file/bot", 1) + file_path
        timeout = (self._connect_timeout, self._read_timeout)
        try:
            with self._sessions.get().get(url, stream=True, timeout=timeout) as response:
                if response.status_code != 200:
                    raise TelegramError("getFile", response.status_code, "file download failed")
                chunks, size = [], 0
                for chunk in response.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ValueError("file too large")
                    chunks.append(chunk)
        except NETWORK_ERRORS as exc:
            raise TelegramNetworkError("getFile", type(exc).__name__) from None
        return b"".join(chunks)

    @staticmethod
    def parse_response(method: str, response: Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("ok") is True:
            return body.get("result")
        code = response.status_code
        description = response.reason or "error"
        retry_after = None
        if isinstance(body, dict):
            code = int(body.get("error_code") or code)
            description = str(body.get("description") or description)
            parameters = body.get("parameters") or {}
            if isinstance(parameters, dict) and parameters.get("retry_after") is not None:
                retry_after = float(parameters["retry_after"])
        if code < 400:
            code = 500
        raise TelegramError(method, code, description, retry_after)
