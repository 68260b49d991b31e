"""The one door to the Bot API.

`BotApiClient.call` performs a single HTTP request with explicit connect/read timeouts on a
pooled session and maps the answer to a result or a `TelegramError`. `call_with_retries` adds
bounded retries with backoff and jitter for 5xx, network errors and 429 (honouring
`retry_after`). Nothing else in the project speaks HTTP to Telegram.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from habitbot.telegram.errors import TelegramError, TelegramNetworkError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.05
READ_TIMEOUT = 10.0
MAX_ATTEMPTS = 5
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
MAX_RETRY_AFTER = 120.0


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
                 read_timeout: float = READ_TIMEOUT,
                 sleep: Callable[[float], None] = time.sleep):
        self.api_url = api_url.rstrip("/")
        self._base = f"{self.api_url}/bot{token}/"
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._local = threading.local()
        self._sleep = sleep

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None

    def raw_request(self, method: str, params: dict[str, Any] | None = None,
                    files: dict[str, Any] | None = None,
                    read_timeout: float | None = None) -> requests.Response:
        """One POST on the pooled session with our timeouts; errors are the caller's to map."""
        timeout = (self._connect_timeout, read_timeout or self._read_timeout)
        return self._session().post(self._base + method, data=_encode(params or {}),
                                    files=files, timeout=timeout)

    def call(self, method: str, params: dict[str, Any] | None = None,
             files: dict[str, Any] | None = None, read_timeout: float | None = None) -> Any:
        """One request; returns `result` or raises TelegramError (never leaks the token)."""
        try:
            response = self.raw_request(method, params, files, read_timeout)
        except requests.Timeout:
            raise TelegramNetworkError(method, "timeout") from None
        except requests.RequestException as exc:
            raise TelegramNetworkError(method, type(exc).__name__) from None
        return self._parse(method, response)

    @staticmethod
    def _parse(method: str, response: requests.Response) -> Any:
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

    def call_with_retries(self, method: str, params: dict[str, Any] | None = None,
                          files: dict[str, Any] | None = None,
                          max_attempts: int = MAX_ATTEMPTS,
                          before_attempt: Callable[[], None] | None = None) -> Any:
        """Retry transient failures with exponential backoff and full jitter."""
        attempt = 0
        while True:
            attempt += 1
            if before_attempt is not None:
                before_attempt()
            try:
                return self.call(method, params, files)
            except TelegramError as exc:
                if exc.permanent or attempt >= max_attempts:
                    raise
                delay = self.retry_delay(exc, attempt)
                log.warning("telegram call retry", extra={
                    "method": method, "code": exc.code, "attempt": attempt,
                    "delay": round(delay, 2)})
                self._sleep(delay)

    @staticmethod
    def retry_delay(exc: TelegramError, attempt: int) -> float:
        if exc.rate_limited and exc.retry_after is not None:
            return min(exc.retry_after, MAX_RETRY_AFTER)
        return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))
