"""Alerts: cooldown per fingerprint, every alert that goes out recorded (one inside the
cooldown only counted), nothing lost while the database or Redis is down, and nothing
unbounded when a flood meets an outage."""

from __future__ import annotations

import logging

import pytest
import redis
from sqlalchemy import select

from habitbot import metrics
from habitbot.db import make_engine
from habitbot.logs import Throttled
from habitbot.models import AdminAlert
from habitbot.services.alerts import (
    COMPONENT_BUDGET,
    FAILURE_BACKOFF_SECONDS,
    MAX_UNRECORDED,
    PENDING_KEY,
    TELEGRAM_UNREACHABLE,
    AlertService,
)
from habitbot.telegram.errors import TelegramError, TelegramNetworkError

CHAT = 424242


@pytest.fixture(autouse=True)
def _quiet_slate() -> None:
    Throttled.reset_all()


class Inbox:
    """Stands in for the Telegram delivery of one alert chat."""

    def __init__(self, fail: bool = False, unreachable: bool = False):
        self.messages: list[tuple[int, str]] = []
        self.fail = fail
        self.unreachable = unreachable

    def __call__(self, chat_id: int, text: str) -> None:
        if self.unreachable:
            raise TelegramNetworkError("sendMessage", "ConnectionError")
        if self.fail:
            raise TelegramError("sendMessage", 403, "Forbidden: bot was blocked by the user")
        self.messages.append((chat_id, text))


def _rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(AdminAlert).order_by(AdminAlert.id)).all()


def test_alert_is_formatted_delivered_and_recorded(engine, redis_conn):
    inbox = Inbox()
    service = AlertService(engine, redis_conn, inbox, CHAT)
    alert = service.raise_alert("CRITICAL", "health_check database", "connection refused",
                                fingerprint="health_check:database")
    assert alert.status == "sent"
    assert inbox.messages == [(CHAT, "[CRITICAL] health_check database: connection refused")]
    [row] = _rows(engine)
    assert (row.severity, row.component, row.status, row.fingerprint) == (
        "CRITICAL", "health_check database", "sent", "health_check:database")


def test_same_fingerprint_is_not_resent_within_the_cooldown(engine, redis_conn):
    inbox = Inbox()
    first = AlertService(engine, redis_conn, inbox, CHAT)
    second_process = AlertService(engine, redis_conn, inbox, CHAT)
    statuses = [first.raise_alert("WARNING", "scheduler", "stale", "fp").status,
                second_process.raise_alert("WARNING", "scheduler", "stale", "fp").status,
                first.raise_alert("WARNING", "scheduler", "other", "fp2").status]
    assert statuses == ["sent", "suppressed", "sent"]
    assert len(inbox.messages) == 2
    assert [r.status for r in _rows(engine)] == ["sent", "sent"]  # a suppressed one writes none


def test_cooldown_expires(engine, redis_conn):
    inbox = Inbox()
    service = AlertService(engine, redis_conn, inbox, CHAT, cooldown_seconds=1)
    service.raise_alert("INFO", "x", "y", "fp")
    redis_conn.delete("habitbot:alert:cooldown:fp")  # as if the cooldown ran out
    assert service.raise_alert("INFO", "x", "y", "fp").status == "sent"


def test_without_alert_chat_alerts_are_logged_and_stored(engine, redis_conn):
    service = AlertService(engine, redis_conn, Inbox(), None)
    assert service.raise_alert("WARNING", "scheduler", "stale").status == "logged"
    assert [r.status for r in _rows(engine)] == ["logged"]


def test_delivery_failure_is_recorded_as_failed(engine, redis_conn):
    service = AlertService(engine, redis_conn, Inbox(fail=True), CHAT)
    assert service.raise_alert("CRITICAL", "bot", "down").status == "failed"
    assert [r.status for r in _rows(engine)] == ["failed"]


def test_a_failed_delivery_gives_the_cooldown_back(engine, redis_conn):
    inbox = Inbox(fail=True)  # the bot is blocked in the alert chat
    service = AlertService(engine, redis_conn, inbox, CHAT)
    assert service.raise_alert("WARNING", "health_check workers", "0 alive", "w").status == \
        "failed"
    inbox.fail = False  # unblocked
    assert service.raise_alert("WARNING", "health_check workers", "0 alive", "w").status == \
        "sent"
    assert service.raise_alert("WARNING", "health_check workers", "0 alive", "w").status == \
        "suppressed"  # delivered: the cooldown holds again
    assert [r.status for r in _rows(engine)] == ["failed", "sent"]


def test_telegram_unreachable_leaves_a_short_backoff_not_the_cooldown(engine, redis_conn):
    inbox = Inbox(unreachable=True)
    service = AlertService(engine, redis_conn, inbox, CHAT)
    statuses = [service.raise_alert("CRITICAL", "telegram", "unreachable",
                                    TELEGRAM_UNREACHABLE).status for _ in range(3)]
    assert statuses == ["failed", "suppressed", "suppressed"]  # no retry storm
    assert 0 < redis_conn.ttl(f"habitbot:alert:cooldown:{TELEGRAM_UNREACHABLE}") <= \
        FAILURE_BACKOFF_SECONDS
    inbox.unreachable = False
    redis_conn.delete(f"habitbot:alert:cooldown:{TELEGRAM_UNREACHABLE}")  # the backoff ran out
    assert service.raise_alert("CRITICAL", "telegram", "unreachable",
                               TELEGRAM_UNREACHABLE).status == "sent"
    assert redis_conn.ttl(f"habitbot:alert:cooldown:{TELEGRAM_UNREACHABLE}") > \
        FAILURE_BACKOFF_SECONDS  # delivered: the full cooldown


def test_the_alert_about_telegram_backs_off_whatever_the_failure(engine, redis_conn):
    service = AlertService(engine, redis_conn, Inbox(fail=True), CHAT)
    assert service.raise_alert("CRITICAL", "telegram", "unreachable",
                               TELEGRAM_UNREACHABLE).status == "failed"
    assert service.raise_alert("CRITICAL", "telegram", "unreachable",
                               TELEGRAM_UNREACHABLE).status == "suppressed"


def test_without_redis_a_failed_delivery_gives_the_cooldown_back_too(engine, redis_proxy,
                                                                     redis_url):
    dead_redis = redis.Redis.from_url(redis_proxy.url_for(redis_url), socket_timeout=1,
                                      socket_connect_timeout=1)
    redis_proxy.set_mode("refuse")
    inbox = Inbox(fail=True)
    service = AlertService(engine, dead_redis, inbox, CHAT)
    assert service.raise_alert("WARNING", "x", "y", "fp").status == "failed"
    inbox.fail = False
    assert service.raise_alert("WARNING", "x", "y", "fp").status == "sent"
    inbox.unreachable = True
    assert [service.raise_alert("WARNING", "x", "z", "fp2").status for _ in range(2)] == \
        ["failed", "suppressed"]
    dead_redis.close()


def test_alert_about_a_dead_database_goes_out_and_is_recorded_later(engine, redis_conn,
                                                                    pg_proxy, database_url):
    dead = make_engine(pg_proxy.url_for(database_url), "cli", connect_timeout=1)
    pg_proxy.set_mode("refuse")
    inbox = Inbox()
    service = AlertService(dead, redis_conn, inbox, CHAT)
    alert = service.raise_alert("CRITICAL", "health_check database", "down", "db")
    assert alert.status == "sent" and len(inbox.messages) == 1
    assert _rows(engine) == [] and redis_conn.llen(PENDING_KEY) == 1
    assert service.flush_pending() == 0  # still down: nothing lost
    assert redis_conn.llen(PENDING_KEY) == 1
    pg_proxy.set_mode("pass")
    assert service.flush_pending() == 1
    [row] = _rows(engine)
    assert row.fingerprint == "db" and row.raised_at.isoformat() == alert.raised_at
    dead.dispose()


def test_with_redis_and_database_down_alerts_still_go_out_once(engine, redis_conn, pg_proxy,
                                                                database_url, redis_proxy,
                                                                redis_url):
    dead_db = make_engine(pg_proxy.url_for(database_url), "cli", connect_timeout=1)
    dead_redis = redis.Redis.from_url(redis_proxy.url_for(redis_url), socket_timeout=1,
                                      socket_connect_timeout=1)
    pg_proxy.set_mode("refuse")
    redis_proxy.set_mode("refuse")
    inbox = Inbox()
    service = AlertService(dead_db, dead_redis, inbox, CHAT)
    statuses = [service.raise_alert("CRITICAL", "health_check redis", "down", "r").status
                for _ in range(3)]
    assert statuses == ["sent", "suppressed", "suppressed"]
    pg_proxy.set_mode("pass")
    redis_proxy.set_mode("pass")
    assert service.flush_pending() == 1
    assert [r.status for r in _rows(engine)] == ["sent"]
    dead_db.dispose()
    dead_redis.close()


def _counted(redis_conn, series: str) -> float:
    return metrics.stored(redis_conn).get(series, 0)


def test_a_flood_of_one_alert_writes_one_row_and_counts_the_rest(engine, redis_conn, caplog):
    caplog.set_level(logging.INFO, logger="habitbot.services.alerts")
    inbox = Inbox()
    service = AlertService(engine, redis_conn, inbox, CHAT)
    statuses = [service.raise_alert("WARNING", "payments yookassa", f"refused {n}",
                                    "yookassa_untrusted_ip").status for n in range(200)]
    assert statuses == ["sent"] + ["suppressed"] * 199
    assert len(inbox.messages) == 1 and [r.status for r in _rows(engine)] == ["sent"]
    assert _counted(redis_conn, 'habitbot_alerts_total{status="suppressed"}') == 199
    assert _counted(redis_conn, 'habitbot_alerts_total{status="sent"}') == 1
    assert len(caplog.records) <= 2  # the alert, and one line for the suppressed ones


def test_without_redis_the_cooldown_is_read_from_the_last_row(engine, redis_proxy, redis_url):
    """Two processes, Redis down: the second sees the first one's row and stays quiet."""
    dead_redis = redis.Redis.from_url(redis_proxy.url_for(redis_url), socket_timeout=1,
                                      socket_connect_timeout=1)
    redis_proxy.set_mode("refuse")
    inbox = Inbox()
    first, second = (AlertService(engine, dead_redis, inbox, CHAT) for _ in range(2))
    assert first.raise_alert("WARNING", "x", "y", "fp").status == "sent"
    assert [second.raise_alert("WARNING", "x", "y", "fp").status for _ in range(50)] == \
        ["suppressed"] * 50
    assert len(inbox.messages) == 1 and len(_rows(engine)) == 1
    dead_redis.close()


def test_the_waiting_list_is_bounded_while_the_database_is_down(engine, redis_conn, pg_proxy,
                                                                database_url):
    dead = make_engine(pg_proxy.url_for(database_url), "cli", connect_timeout=1)
    pg_proxy.set_mode("refuse")
    service = AlertService(dead, redis_conn, Inbox(), CHAT)
    raised = MAX_UNRECORDED + 25
    for n in range(raised):  # distinct CRITICAL fingerprints: none is suppressed
        assert service.raise_alert("CRITICAL", "flood", f"alert {n}", f"fp{n}").status == \
            "sent"
    assert redis_conn.llen(PENDING_KEY) == MAX_UNRECORDED
    assert _counted(redis_conn, "habitbot_alert_records_dropped_total") == 25
    pg_proxy.set_mode("pass")
    assert service.flush_pending() == MAX_UNRECORDED
    rows = _rows(engine)
    assert rows[0].fingerprint == "fp0" and len(rows) == MAX_UNRECORDED  # the first are kept
    dead.dispose()


def test_the_memory_waiting_list_is_bounded_when_redis_is_down_too(engine, redis_conn,
                                                                   pg_proxy, database_url,
                                                                   redis_proxy, redis_url):
    dead_db = make_engine(pg_proxy.url_for(database_url), "cli", connect_timeout=1)
    dead_redis = redis.Redis.from_url(redis_proxy.url_for(redis_url), socket_timeout=1,
                                      socket_connect_timeout=1)
    pg_proxy.set_mode("refuse")
    redis_proxy.set_mode("refuse")
    service = AlertService(dead_db, dead_redis, None, None)
    for n in range(MAX_UNRECORDED + 10):
        service.raise_alert("CRITICAL", "flood", f"alert {n}", f"fp{n}")
    pg_proxy.set_mode("pass")
    redis_proxy.set_mode("pass")
    assert service.flush_pending() == MAX_UNRECORDED
    assert redis_conn.llen(PENDING_KEY) == 0
    dead_db.dispose()
    dead_redis.close()


def _budget_flood(service: AlertService, inbox: Inbox) -> None:
    raised = [service.raise_alert("WARNING", "payments cryptobot", f"invoice {n} unknown",
                                  f"payment_unknown:cryptobot:{n}").status for n in range(100)]
    assert raised[:COMPONENT_BUDGET] == ["sent"] * COMPONENT_BUDGET
    assert set(raised[COMPONENT_BUDGET:]) == {"suppressed"}
    again = service.raise_alert("WARNING", "payments cryptobot", "invoice 3 unknown",
                                "payment_unknown:cryptobot:3")
    assert again.status == "suppressed"  # inside its own cooldown
    critical = service.raise_alert("CRITICAL", "payments cryptobot", "mismatch", "mismatch:1")
    assert critical.status == "sent"  # money: never held back by the budget
    other = service.raise_alert("WARNING", "payments yookassa", "unknown", "payment_unknown:y:1")
    assert other.status == "sent"  # another component has its own budget
    floods = [text for _, text in inbox.messages if "more than 20 different" in text]
    assert len(floods) == 1 and "payments cryptobot" in floods[0]
    assert len(inbox.messages) == COMPONENT_BUDGET + 3


def test_alerts_that_carry_an_id_are_bounded_per_component(engine, redis_conn):
    inbox = Inbox()
    _budget_flood(AlertService(engine, redis_conn, inbox, CHAT), inbox)
    assert len(_rows(engine)) == COMPONENT_BUDGET + 3
    assert redis_conn.scard("habitbot:alert:budget:payments cryptobot") == COMPONENT_BUDGET


def test_without_redis_the_budget_holds_in_memory(engine, redis_proxy, redis_url):
    dead_redis = redis.Redis.from_url(redis_proxy.url_for(redis_url), socket_timeout=1,
                                      socket_connect_timeout=1)
    redis_proxy.set_mode("refuse")
    inbox = Inbox()
    _budget_flood(AlertService(engine, dead_redis, inbox, CHAT), inbox)
    assert len(_rows(engine)) == COMPONENT_BUDGET + 3
    dead_redis.close()


class Killed(BaseException):
    """The process dies here: nothing after it runs, no handler catches it."""


class DyingRedis(redis.Redis):
    """The test's Redis client that dies right after (or right before) the named commands,
    as a process killed at that point would."""

    after: tuple[str, ...] = ()
    before: tuple[str, ...] = ()

    def execute_command(self, *args, **options):
        name = str(args[0]).upper()
        if name in self.before:
            raise Killed(name)
        result = super().execute_command(*args, **options)
        if name in self.after:
            raise Killed(name)
        return result


def _waiting_alerts(engine, redis_conn, pg_proxy, database_url, count: int) -> None:
    dead = make_engine(pg_proxy.url_for(database_url), "cli", connect_timeout=1)
    pg_proxy.set_mode("refuse")
    service = AlertService(dead, redis_conn, None, None)
    for n in range(count):
        service.raise_alert("CRITICAL", "flood", f"alert {n}", f"fp{n}")
    pg_proxy.set_mode("pass")
    dead.dispose()
    assert redis_conn.llen(PENDING_KEY) == count and _rows(engine) == []


@pytest.mark.parametrize("dies", [
    {"after": ("LPOP", "LRANGE")},             # having read the waiting records
    {"before": ("EVALSHA", "LREM", "LTRIM")},  # having written them, before removing them
])
def test_a_flush_killed_midway_loses_no_alert_and_writes_none_twice(
        engine, redis_conn, redis_url, pg_proxy, database_url, dies):
    _waiting_alerts(engine, redis_conn, pg_proxy, database_url, 150)
    dying = DyingRedis.from_url(redis_url)
    dying.after, dying.before = dies.get("after", ()), dies.get("before", ())

    with pytest.raises(Killed):
        AlertService(engine, dying, None, None).flush_pending()
    AlertService(engine, redis_conn, None, None).flush_pending()

    assert sorted(r.fingerprint for r in _rows(engine)) == sorted(f"fp{n}" for n in range(150))
    assert redis_conn.llen(PENDING_KEY) == 0
    dying.close()


def test_two_processes_flushing_at_once_write_each_alert_once(engine, redis_conn, pg_proxy,
                                                              database_url):
    import threading

    _waiting_alerts(engine, redis_conn, pg_proxy, database_url, 300)
    services = [AlertService(engine, redis_conn, None, None) for _ in range(3)]
    written: list[int] = []
    threads = [threading.Thread(target=lambda s=s: written.append(s.flush_pending()))
               for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(written) == 300 and len(_rows(engine)) == 300
    assert redis_conn.llen(PENDING_KEY) == 0
