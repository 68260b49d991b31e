"""The shared Redis token bucket (decisions, not timings)."""

from __future__ import annotations

import time

import pytest

from habitbot.telegram.limiter import BULK, INTERACTIVE, Limits, RateLimiter


def _limiter(redis_conn, **kw) -> RateLimiter:
    return RateLimiter(redis_conn, Limits(**kw))


def test_global_burst_then_wait(redis_conn):
    limiter = _limiter(redis_conn, global_rate=30, global_burst=5, chat_burst=100)
    granted = [limiter.try_acquire(chat, INTERACTIVE) for chat in range(5)]
    assert granted == [0] * 5
    wait = limiter.try_acquire(99, INTERACTIVE)
    assert 0 < wait <= 34  # about one token at 30/s


def test_per_chat_bucket_is_independent_of_other_chats(redis_conn):
    limiter = _limiter(redis_conn, global_rate=1000, global_burst=1000, chat_rate=1,
                       chat_burst=2)
    assert [limiter.try_acquire(7) for _ in range(2)] == [0, 0]
    assert 0 < limiter.try_acquire(7) <= 1000
    assert limiter.try_acquire(8) == 0


def test_shared_pause_stops_every_sender(redis_conn):
    first = _limiter(redis_conn, global_rate=1000, global_burst=1000)
    second = _limiter(redis_conn, global_rate=1000, global_burst=1000)
    first.pause(3)
    wait = second.try_acquire(1)
    assert 2000 < wait <= 3000
    first.pause(1)  # a shorter pause never shortens a longer one
    assert second.try_acquire(2) > 1000


def test_bulk_yields_a_share_to_interactive_demand(redis_conn):
    limiter = _limiter(redis_conn, global_rate=100, global_burst=100, chat_burst=100,
                       bulk_share=0.5)
    # No interactive demand: bulk may use the whole budget.
    assert all(limiter.try_acquire(i, BULK) == 0 for i in range(60))
    # Interactive demand appears: the bulk bucket (half the rate) is now enforced ...
    assert limiter.try_acquire(1000, INTERACTIVE) == 0
    waits = [limiter.try_acquire(2000 + i, BULK) for i in range(60)]
    assert any(w > 0 for w in waits)
    # ... while interactive sends still get tokens.
    assert limiter.try_acquire(1001, INTERACTIVE) == 0


def test_acquire_blocks_until_a_token_with_an_injected_sleep(redis_conn):
    slept: list[float] = []
    limiter = RateLimiter(redis_conn, Limits(global_rate=1000, chat_rate=1, chat_burst=1),
                          sleep=slept.append)
    limiter.acquire(5)
    # The next token for chat 5 needs ~1 s: a deadline shorter than that gives up at once.
    with pytest.raises(TimeoutError):
        limiter.acquire(5, deadline=time.monotonic() + 0.2)


def test_bulk_leaves_a_reserve_for_interactive_sends(redis_conn):
    limiter = _limiter(redis_conn, global_rate=10, global_burst=5, chat_burst=100,
                       bulk_share=1.0, interactive_reserve=2)
    assert limiter.try_acquire(1, INTERACTIVE) == 0  # interactive demand seen; 4 tokens left
    assert [limiter.try_acquire(10 + i, BULK) for i in range(2)] == [0, 0]  # down to 2
    assert limiter.try_acquire(20, BULK) > 0  # the reserve is not for bulk
    assert limiter.try_acquire(2, INTERACTIVE) == 0  # but a reply gets it at once
