"""Liveness heartbeats in Redis: the bot after each poll, the scheduler on each tick."""

from __future__ import annotations

import time

import redis

from habitbot.redis_client import KEY_PREFIX

TTL_SECONDS = 3600


def _key(name: str) -> str:
    return f"{KEY_PREFIX}heartbeat:{name}"


def beat(conn: redis.Redis, name: str, now: float | None = None) -> None:
    conn.set(_key(name), f"{time.time() if now is None else now:.3f}", ex=TTL_SECONDS)


def age(conn: redis.Redis, name: str, now: float | None = None) -> float | None:
    """Seconds since the last beat, or None if there never was one (or it expired)."""
    raw = conn.get(_key(name))
    if raw is None:
        return None
    return max(0.0, (time.time() if now is None else now) - float(raw))
