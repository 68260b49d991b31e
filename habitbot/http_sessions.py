"""HTTP for our clients: pooled `requests` sessions, one per thread (a Session is not
thread-safe), closed together; and a direct urllib3 path for plain JSON calls.

Proxies from the environment are resolved once when a session is made, not on every request:
with `trust_env` requests re-reads the environment and ~/.netrc per call, which costs more CPU
than the call itself on a busy path. Authentication is always explicit.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter

# What a failed exchange raises on either path: the callers treat both as network failures.
NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError)
TIMEOUT_ERRORS = (requests.Timeout, urllib3.exceptions.TimeoutError)


class ApiResponse:
    """An HTTP answer as our callers read it (the part of `requests.Response` they use:
    status_code, reason, content, text, json(), headers)."""

    __slots__ = ("status_code", "reason", "content", "headers")

    def __init__(self, status_code: int, reason: str, content: bytes,
                 headers: dict[str, str]):
        self.status_code = status_code
        self.reason = reason
        self.content = content
        self.headers = headers

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


Response = requests.Response | ApiResponse


class DirectHttp:
    """JSON calls straight through urllib3 connection pools, one per host (thread-safe):
    requests costs about a millisecond of CPU per call more, which shows on busy paths
    (reminder bursts, webhooks), and so does urllib3's PoolManager — it parses the URL and
    builds a pool key on every call. Only for hosts reached without a proxy; no retries and
    no redirects here (the callers retry)."""

    def __init__(self, maxsize: int = 16) -> None:
        self._maxsize = maxsize
        self._pools: dict[str, urllib3.HTTPConnectionPool] = {}
        self._timeouts: dict[tuple[float, float], urllib3.Timeout] = {}
        self._lock = threading.Lock()

    def request(self, method: str, url: str, timeout: tuple[float, float], *,
                json_body: Any = None, headers: dict[str, str] | None = None,
                auth: tuple[str, str] | None = None) -> ApiResponse:
        sent = dict(headers or {})
        body = None
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            sent["Content-Type"] = "application/json"
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            sent["Authorization"] = f"Basic {token}"
        pool, path = self._pool(url)
        answer = pool.urlopen(method, path, body=body, headers=sent,
                              timeout=self._timeout(timeout), retries=False, redirect=False)
        return ApiResponse(answer.status, answer.reason or "", answer.data,
                           dict(answer.headers))

    def _pool(self, url: str) -> tuple[urllib3.HTTPConnectionPool, str]:
        """The pool of the URL's scheme, host and port, and the path (with the query)."""
        scheme, sep, rest = url.partition("://")
        host, _, path = rest.partition("/")
        origin = f"{scheme}{sep}{host}"
        pool = self._pools.get(origin)
        if pool is None:
            with self._lock:
                pool = self._pools.get(origin)
                if pool is None:
                    pool = self._pools[origin] = urllib3.connection_from_url(
                        origin, maxsize=self._maxsize, retries=False)
        return pool, f"/{path}"

    def _timeout(self, timeout: tuple[float, float]) -> urllib3.Timeout:
        made = self._timeouts.get(timeout)
        if made is None:
            made = self._timeouts[timeout] = urllib3.Timeout(connect=timeout[0],
                                                             read=timeout[1])
        return made

    def clear(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


class ThreadSessions:
    def __init__(self, proxies: dict[str, str], pool_connections: int = 4,
                 pool_maxsize: int = 16) -> None:
        self._proxies = dict(proxies)
        self._pool = (pool_connections, pool_maxsize)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            session.proxies.update(self._proxies)
            adapter = HTTPAdapter(pool_connections=self._pool[0], pool_maxsize=self._pool[1])
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close the sessions of every thread (at process stop)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()
