"""HTTP to payment providers: pooled sessions, explicit timeouts, retries with backoff.

Every provider call goes through `ProviderHttp.request`. Timeouts, connection errors, 5xx and
429 are retried a bounded number of times with exponential backoff and jitter; the caller
passes the same idempotence key on every attempt, so a retried creation never makes a second
payment. After the last attempt `ProviderUnavailable` is raised; a 4xx answer other than 429
is `ProviderRefused` at once (retrying cannot change it). Errors carry the provider's error
code and description, never a credential.
"""

from __future__ import annotations

import logging
import random
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from habitbot.http_sessions import (
    NETWORK_ERRORS,
    TIMEOUT_ERRORS,
    DirectHttp,
    Response,
    ThreadSessions,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.05
READ_TIMEOUT = 10.0
ATTEMPTS = 3
BACKOFF_BASE = 0.3
BACKOFF_CAP = 5.0
RETRY_AFTER_CAP = 5.0


class ProviderError(Exception):
    """A provider call did not give a usable answer."""

    def __init__(self, provider: str, operation: str, message: str,
                 status: int | None = None, code: str | None = None) -> None:
        super().__init__(f"{provider} {operation}: {message}")
        self.provider = provider
        self.operation = operation
        self.status = status
        self.code = code


class ProviderUnavailable(ProviderError):
    """Timeouts, connection errors or 5xx after every retry: the outcome is unknown."""


class ProviderRefused(ProviderError):
    """A definite refusal (4xx): bad request, bad credentials, not found."""

    @property
    def not_found(self) -> bool:
        return self.status == 404


class ProviderHttp:
    """Thread-safe HTTP (one pooled session per thread) with retries for one provider."""

    def __init__(self, provider: str, connect_timeout: float | None = None,
                 read_timeout: float | None = None, attempts: int = ATTEMPTS,
                 backoff: float = BACKOFF_BASE,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.provider = provider
        self.timeout = (connect_timeout or CONNECT_TIMEOUT, read_timeout or READ_TIMEOUT)
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self._sleep = sleep
        proxies = urllib.request.getproxies()
        self._sessions = ThreadSessions(proxies, 2, 8)
        # Plain JSON calls skip requests (about a millisecond of CPU each) unless a proxy is
        # configured, which only the requests path knows how to use.
        self._direct = None if proxies else DirectHttp(maxsize=8)

    def close(self) -> None:
        self._sessions.close()
        if self._direct is not None:
            self._direct.clear()

    def _send(self, method: str, url: str, **kwargs: Any) -> Response:
        if self._direct is not None and set(kwargs) <= {"json", "headers", "auth"}:
            return self._direct.request(method, url, self.timeout, json_body=kwargs.get("json"),
                                        headers=kwargs.get("headers"), auth=kwargs.get("auth"))
        return self._sessions.get().request(method, url, timeout=self.timeout, **kwargs)

    def request(self, operation: str, method: str, url: str,
                parse_error: Callable[[Response], tuple[str | None, str]],
                **kwargs: Any) -> Response:
        """A 2xx response, or ProviderRefused / ProviderUnavailable after the retries."""
        last: ProviderUnavailable | None = None
        for attempt in range(1, self.attempts + 1):
            delay: float | None = None
            try:
                response = self._send(method, url, **kwargs)
            except TIMEOUT_ERRORS:
                last = ProviderUnavailable(self.provider, operation, "timeout")
            except NETWORK_ERRORS as exc:
                last = ProviderUnavailable(self.provider, operation, type(exc).__name__)
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return response
                code, description = parse_error(response)
                if status == 429 or status >= 500:
                    last = ProviderUnavailable(self.provider, operation,
                                               f"HTTP {status} {description}", status, code)
                    delay = _retry_after(response) if status == 429 else None
                else:
                    raise ProviderRefused(self.provider, operation,
                                          f"HTTP {status} {description}", status, code)
            log.warning(f"{self.provider} retry", extra={
                "provider": self.provider, "operation": operation, "attempt": attempt,
                "error": str(last)})
            if attempt < self.attempts:
                self._sleep(delay if delay is not None else self._backoff(attempt))
        assert last is not None
        raise last

    def _backoff(self, attempt: int) -> float:
        return random.uniform(self.backoff / 2,
                              min(BACKOFF_CAP, self.backoff * 2 ** (attempt - 1)))


def _retry_after(response: Response) -> float | None:
    try:
        return min(RETRY_AFTER_CAP, max(0.0, float(response.headers.get("Retry-After", ""))))
    except ValueError:
        return None
