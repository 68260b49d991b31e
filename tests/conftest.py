"""Shared fixtures: a throwaway PostgreSQL database migrated once per run, a Redis database
flushed around every test, the Telegram emulator, and settings that point at all three.

The services come from TEST_PG_ADMIN_URL / TEST_REDIS_URL (set by `make test`), or are
started privately here when those are unset.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
import redis
from sqlalchemy import Engine, text

from habitbot.config import Settings, load_settings
from habitbot.db import make_engine
from habitbot.models import Base
from habitbot.services.schema import run_deploy_gate
from tests.support.faultproxy import FaultProxy

# The payment fixtures (emulators, a paying user, the webhooks app) for every package that needs
# them; a package's own conftest or module still overrides a name such as `runtime`.
pytest_plugins = ["tests.payments.support"]

TEST_TOKEN = "123456:TEST-TOKEN"
ALERT_CHAT = 900001


def _services() -> tuple[str, str]:
    admin = os.environ.get("TEST_PG_ADMIN_URL")
    redis_url = os.environ.get("TEST_REDIS_URL")
    if admin and redis_url:
        return admin, redis_url
    from habitbot.sandbox.services import PostgresCluster, RedisServer

    cluster = PostgresCluster("test", 55432)
    cluster.start()
    server = RedisServer("test", 56380, persistent=False)
    server.start()
    return cluster.admin_url, server.url


@pytest.fixture(scope="session")
def service_urls() -> tuple[str, str]:
    return _services()


def _admin(admin_url: str):
    conn = psycopg2.connect(admin_url, connect_timeout=5)
    conn.autocommit = True
    return conn


def create_database(admin_url: str, prefix: str = "habitbot_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = _admin(admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = _admin(admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


@pytest.fixture(scope="session")
def database_url(service_urls) -> Iterator[str]:
    admin_url = service_urls[0]
    url = create_database(admin_url)
    engine = make_engine(url, "cli")
    try:
        run_deploy_gate(engine)
    finally:
        engine.dispose()
    yield url
    drop_database(admin_url, url)


@pytest.fixture
def scratch_database(service_urls) -> Iterator[str]:
    """An empty database of its own, for tests that break the schema on purpose."""
    url = create_database(service_urls[0], "habitbot_scratch")
    yield url
    drop_database(service_urls[0], url)


@pytest.fixture(scope="session")
def engine(database_url) -> Iterator[Engine]:
    eng = make_engine(database_url, "cli")
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def _clean_database(request) -> Iterator[None]:
    eng = request.getfixturevalue("engine") if "database_url" in request.fixturenames else None
    yield
    if eng is not None:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        with eng.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


# Each test session takes three databases, base .. base+2, of the 64 the test Redis has.
REDIS_BASES = tuple(range(1, 62, 3))


@pytest.fixture(scope="session")
def redis_base(service_urls) -> Iterator[str]:
    """A free block of Redis databases for this session, so that two test sessions on one
    server never flush each other's keys. Yields the server URL without a database."""
    server = service_urls[1].rsplit("/", 1)[0]
    claims = redis.Redis.from_url(server + "/0")
    token = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    base = next((b for b in REDIS_BASES
                 if claims.set(f"habitbot-tests:claim:{b}", token, nx=True, ex=3 * 3600)), None)
    if base is None:
        claims.close()
        pytest.exit("every block of test Redis databases is taken by another test session")
    yield f"{server}/{base}"
    claims.delete(f"habitbot-tests:claim:{base}")
    claims.close()


def redis_db(base_url: str, offset: int) -> str:
    """Database base+offset (0: the shared fixtures, 1: the stack, 2: the sandbox chat)."""
    server, base = base_url.rsplit("/", 1)
    return f"{server}/{int(base) + offset}"


@pytest.fixture(scope="session")
def redis_url(redis_base) -> Iterator[str]:
    url = redis_base
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    yield url
    conn.flushdb()
    conn.close()


@pytest.fixture
def redis_conn(redis_url) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture
def emulator():
    from habitbot.sandbox.telegram_emulator import TelegramEmulator

    # Generous limits: conversations in tests are fast; the limits themselves are tested by
    # the sender tests and measured by the benchmarks.
    emu = TelegramEmulator(tokens=(TEST_TOKEN,), global_rate=1000, chat_rate=100,
                           chat_burst=100).start()
    yield emu
    emu.stop()


@pytest.fixture
def emu_client(emulator):
    from habitbot.sandbox.emulator_client import EmulatorClient

    client = EmulatorClient(emulator.url)
    yield client
    client.close()


def make_env(database_url: str, redis_url: str, api_url: str, **extra: str) -> dict[str, str]:
    env = {
        "BOT_TOKEN": TEST_TOKEN,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TELEGRAM_API_URL": api_url,
        "ALERT_CHAT_ID": str(ALERT_CHAT),
        "SCHEMA_CHECK_INTERVAL": "60",
        "TELEGRAM_GLOBAL_RATE": "1000",
        "TELEGRAM_CHAT_RATE": "100",
        # Conversations in tests run far faster than people type: the inbound throttle is
        # tested with its own settings (tests/bot/test_flood.py).
        "USER_UPDATE_BURST": "1000",
    }
    env.update(extra)
    return env


@pytest.fixture
def settings(database_url, redis_url, emulator, redis_conn) -> Settings:
    return load_settings(make_env(database_url, redis_url, emulator.url))


@pytest.fixture
def pg_proxy(database_url) -> Iterator[FaultProxy]:
    host_port = database_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    proxy = FaultProxy(host, int(port))
    yield proxy
    proxy.close()


@pytest.fixture
def redis_proxy(redis_url) -> Iterator[FaultProxy]:
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    proxy = FaultProxy(host, int(port))
    yield proxy
    proxy.close()


@pytest.fixture(autouse=True)
def _restore_telebot_globals(monkeypatch) -> None:
    """The bot installs a process-wide request sender; each test gets the original back."""
    from telebot import apihelper

    monkeypatch.setattr(apihelper, "CUSTOM_REQUEST_SENDER", apihelper.CUSTOM_REQUEST_SENDER)
    monkeypatch.setattr(apihelper, "API_URL", apihelper.API_URL)
    monkeypatch.setattr(apihelper, "FILE_URL", apihelper.FILE_URL)
