"""Conversation state (FSM) in Redis: one hash per user with a TTL.

A dialog survives a bot restart (it is in Redis, not in memory) and an abandoned one expires
after `TTL_SECONDS`. If Redis is unreachable the dialog is lost at worst: reads answer "no
state" and writes are skipped, so the bot keeps working.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import redis

from habitbot.redis_client import KEY_PREFIX

log = logging.getLogger(__name__)

TTL_SECONDS = 24 * 3600
MAX_DATA_BYTES = 16 * 1024


@dataclass
class Conversation:
    state: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _key(telegram_id: int) -> str:
    return f"{KEY_PREFIX}fsm:{telegram_id}"


class ConversationStore:
    def __init__(self, conn: redis.Redis, ttl_seconds: int = TTL_SECONDS):
        self._redis = conn
        self._ttl = ttl_seconds

    def get(self, telegram_id: int) -> Conversation:
        try:
            raw = self._redis.hgetall(_key(telegram_id))
        except redis.RedisError as exc:
            log.warning("conversation state unavailable", extra={
                "user_id": telegram_id, "error": type(exc).__name__})
            return Conversation()
        if not raw:
            return Conversation()
        try:
            data = json.loads(raw.get(b"data", b"{}"))  # type: ignore[union-attr]
            state = raw.get(b"state", b"").decode() or None  # type: ignore[union-attr]
        except (ValueError, UnicodeDecodeError):
            return Conversation()
        return Conversation(state, data if isinstance(data, dict) else {})

    def set(self, telegram_id: int, state: str, data: dict[str, Any] | None = None) -> None:
        payload = json.dumps(data or {}, ensure_ascii=False)
        if len(payload.encode()) > MAX_DATA_BYTES:
            raise ValueError("conversation data too large")
        try:
            pipe = self._redis.pipeline()
            pipe.delete(_key(telegram_id))
            pipe.hset(_key(telegram_id), mapping={"state": state, "data": payload})
            pipe.expire(_key(telegram_id), self._ttl)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("conversation state not saved", extra={
                "user_id": telegram_id, "error": type(exc).__name__})

    def clear(self, telegram_id: int) -> bool:
        """Forget the dialog; True if there was one."""
        try:
            return bool(self._redis.delete(_key(telegram_id)))
        except redis.RedisError as exc:
            log.warning("conversation state not cleared", extra={
                "user_id": telegram_id, "error": type(exc).__name__})
            return False
