"""A token bucket in Redis shared by every process that sends to Telegram.

One atomic Lua script, on Redis server time, checks and takes a token from:
- the global bucket (TELEGRAM_GLOBAL_RATE per second),
- the chat's bucket (TELEGRAM_CHAT_RATE per second),
- for the bulk lane, while interactive demand exists (an interactive send in the last
  `interactive_window_ms`): it may not take the global bucket's last `interactive_reserve`
  tokens, and a bulk bucket caps it at `bulk_share` of the global rate — replies and alerts
  are never starved by reminders, and reminders still use what replies leave,
- and a shared pause: after a 429 anywhere every sender waits `retry_after`.

It answers 0 (token taken), the milliseconds to wait before asking again, or -1 (`BLOCKED`)
when the chat is marked as having blocked the bot — one round trip for both checks. Buckets are a
little stricter than Telegram's (smaller bursts) so network jitter cannot push a burst over.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from habitbot.redis_client import KEY_PREFIX

INTERACTIVE = "interactive"
ALERT = "alert"
BULK = "bulk"
LANES = (INTERACTIVE, ALERT, BULK)

_PREFIX = f"{KEY_PREFIX}tg:"
PAUSE_KEY = f"{_PREFIX}pause_until"
GLOBAL_KEY = f"{_PREFIX}bucket:global"
BULK_KEY = f"{_PREFIX}bucket:bulk"
DEMAND_KEY = f"{_PREFIX}interactive_seen"
BLOCKED_PREFIX = f"{_PREFIX}blocked:"
BLOCKED = -1


def blocked_key(chat_id: int | str | None) -> str:
    return f"{BLOCKED_PREFIX}{chat_id if chat_id is not None else '-'}"

_SCRIPT = """
if redis.call('EXISTS', KEYS[6]) == 1 then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pause = tonumber(redis.call('GET', KEYS[4]) or '0')
if pause > now then return pause - now end

local grate = tonumber(ARGV[1]) / 1000
local gcap = tonumber(ARGV[2])
local crate = tonumber(ARGV[3]) / 1000
local ccap = tonumber(ARGV[4])
local brate = grate * tonumber(ARGV[5])
local lane = ARGV[6]
local window = tonumber(ARGV[7])

local function level(key, rate, cap)
  local v = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(v[1])
  local ts = tonumber(v[2])
  if tokens == nil or ts == nil then return cap end
  return math.min(cap, tokens + math.max(0, now - ts) * rate)
end

local g = level(KEYS[1], grate, gcap)
local c = level(KEYS[2], crate, ccap)
local wait = 0
if g < 1 then wait = math.max(wait, (1 - g) / grate) end
if c < 1 then wait = math.max(wait, (1 - c) / crate) end

local b = nil
if lane == 'bulk' then
  b = level(KEYS[3], brate, math.max(1, gcap * tonumber(ARGV[5])))
  local seen = tonumber(redis.call('GET', KEYS[5]) or '0')
  if now - seen < window then
    local reserve = tonumber(ARGV[8])
    if g < 1 + reserve then wait = math.max(wait, (1 + reserve - g) / grate) end
    if b < 1 then wait = math.max(wait, (1 - b) / brate) end
  end
else
  redis.call('SET', KEYS[5], now, 'PX', window * 2)
end
if wait > 0 then return math.max(1, math.ceil(wait)) end

redis.call('HSET', KEYS[1], 't', g - 1, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(gcap / grate) + 1000)
redis.call('HSET', KEYS[2], 't', c - 1, 'ts', now)
redis.call('PEXPIRE', KEYS[2], math.ceil(ccap / crate) + 1000)
if b ~= nil then
  redis.call('HSET', KEYS[3], 't', math.max(0, b - 1), 'ts', now)
  redis.call('PEXPIRE', KEYS[3], 60000)
end
return 0
"""

_PAUSE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ms > current then
  redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000)
end
return until_ms
"""


@dataclass(frozen=True)
class Limits:
    global_rate: float = 30.0
    chat_rate: float = 1.0
    # Telegram tolerates bursts; ours stay below its bucket so jitter cannot overflow it.
    global_burst: float = 5.0
    chat_burst: float = 2.0
    # Measured with bench/sender_bench.py: with these, a reminder burst uses >= 0.97 of the
    # limit while replies during it keep a p95 latency far below a second.
    bulk_share: float = 0.95
    interactive_reserve: float = 2.0
    interactive_window_ms: int = 2000


class RateLimiter:
    def __init__(self, conn: redis.Redis, limits: Limits | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self._redis = conn
        self.limits = limits or Limits()
        self._script = conn.register_script(_SCRIPT)
        self._pause_script = conn.register_script(_PAUSE_SCRIPT)
        self._sleep = sleep

    def try_acquire(self, chat_id: int | str | None, lane: str = INTERACTIVE) -> int:
        """Take a token now (returns 0), return the milliseconds to wait, or BLOCKED."""
        lim = self.limits
        chat_key = f"{_PREFIX}bucket:chat:{chat_id if chat_id is not None else '-'}"
        return int(self._script(
            keys=[GLOBAL_KEY, chat_key, BULK_KEY, PAUSE_KEY, DEMAND_KEY, blocked_key(chat_id)],
            args=[lim.global_rate, lim.global_burst, lim.chat_rate, lim.chat_burst,
                  lim.bulk_share, BULK if lane == BULK else INTERACTIVE,
                  lim.interactive_window_ms, lim.interactive_reserve]))

    def acquire(self, chat_id: int | str | None, lane: str = INTERACTIVE,
                deadline: float | None = None) -> float:
        """Block until a token is taken; returns the seconds waited, or BLOCKED (no token
        taken) when the chat blocked the bot. Raises TimeoutError when `deadline` (a
        time.monotonic() value) passes first."""
        started = time.monotonic()
        while True:
            wait_ms = self.try_acquire(chat_id, lane)
            if wait_ms == BLOCKED:
                return BLOCKED
            if wait_ms == 0:
                return time.monotonic() - started
            delay = wait_ms / 1000 + random.uniform(0, 0.01)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise TimeoutError("rate limiter wait exceeds the deadline")
            self._sleep(min(delay, 1.0))

    def pause(self, seconds: float) -> None:
        """Everyone waits: Telegram answered 429 with retry_after=seconds."""
        self._pause_script(keys=[PAUSE_KEY], args=[int(seconds * 1000)])
