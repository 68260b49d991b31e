"""Pooled `requests` sessions, one per thread (a Session is not thread-safe), closed together.

Proxies from the environment are resolved once when a session is made, not on every request:
with `trust_env` requests re-reads the environment and ~/.netrc per call, which costs more CPU
than the call itself on a busy path. Authentication is always explicit.
"""

from __future__ import annotations

import threading

import requests
from requests.adapters import HTTPAdapter


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
