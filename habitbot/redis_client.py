"""Redis connections with short timeouts: a dead Redis fails a call in about a second."""

from __future__ import annotations

import redis

KEY_PREFIX = "habitbot:"


def make_redis(url: str, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=30,
        retry_on_timeout=False,
    )
