"""Per-user inbound throttle: one user typing or tapping non-stop cannot take the bot's capacity
from everyone else.

A token bucket per user in Redis (`USER_UPDATE_RATE` updates per second, `USER_UPDATE_BURST`
at once), checked by one atomic Lua script in the polling loop before an update is queued.
An update past the bucket is dropped — confirmed to Telegram like a handled one, never written
to the database — and counted. The first drop of a flood also answers "slow down" once: the
notice flag lives as long as the flood goes on plus `NOTICE_QUIET_SECONDS`, so a user who keeps
flooding is told once, and told again only after a quiet spell.

Payment updates never pass through here (the caller exempts them). With Redis unavailable
every update is let through: a throttle must never lose a user's message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from habitbot.redis_client import KEY_PREFIX

log = logging.getLogger(__name__)

ALLOW, DROP, DROP_AND_NOTIFY = "allow", "drop", "drop_and_notify"
NOTICE_QUIET_SECONDS = 60
_PREFIX = f"{KEY_PREFIX}inbound:"

# KEYS: bucket, notice flag. ARGV: rate per second, burst, notice quiet ms.
# Returns 0 (allowed), 1 (dropped, first of the flood: notify), 2 (dropped).
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1]) / 1000
local cap = tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(v[1])
local ts = tonumber(v[2])
if tokens == nil or ts == nil then tokens = cap
else tokens = math.min(cap, tokens + math.max(0, now - ts) * rate) end
if tokens >= 1 then
  redis.call('HSET', KEYS[1], 't', tokens - 1, 'ts', now)
  redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate) + 1000)
  return 0
end
redis.call('HSET', KEYS[1], 't', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate) + 1000)
local told = redis.call('SET', KEYS[2], '1', 'PX', tonumber(ARGV[3]), 'GET')
if told then return 2 end
return 1
"""


@dataclass(frozen=True)
class ThrottleLimits:
    rate: float = 1.0   # updates per second per user, sustained
    burst: int = 20     # updates at once


class InboundThrottle:
    def __init__(self, conn: redis.Redis, limits: ThrottleLimits | None = None):
        self.limits = limits or ThrottleLimits()
        self._script = conn.register_script(_SCRIPT)

    def check(self, user_id: int) -> str:
        """ALLOW, DROP, or DROP_AND_NOTIFY (the first drop of a flood)."""
        try:
            verdict = int(self._script(
                keys=[f"{_PREFIX}bucket:{user_id}", f"{_PREFIX}notice:{user_id}"],
                args=[self.limits.rate, self.limits.burst, NOTICE_QUIET_SECONDS * 1000]))
        except redis.RedisError as exc:
            log.warning("inbound throttle unavailable: update let through",
                        extra={"user_id": user_id, "error": type(exc).__name__})
            return ALLOW
        return (ALLOW, DROP_AND_NOTIFY, DROP)[verdict]
