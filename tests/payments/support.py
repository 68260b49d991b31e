"""Fixtures of the payment tests: the YooKassa and Crypto Pay emulators in-process, settings
and a runtime pointing at them, and Alice, a user who pays.

Test modules elsewhere (webhooks, CLI) import the fixtures they need from here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from flask import Flask
from sqlalchemy import func, insert, select
from werkzeug.serving import make_server

from habitbot.config import Settings, load_settings
from habitbot.models import AdminAlert, BalanceTransaction, Payment, User
from habitbot.payments import http
from habitbot.runtime import Runtime
from habitbot.sandbox.cryptopay_emulator import CryptoPayEmulator
from habitbot.sandbox.payments_client import CryptoPayControl, YooKassaControl
from habitbot.sandbox.yookassa_emulator import YooKassaEmulator
from habitbot.services import billing
from tests.conftest import make_env
from tests.support.jobs import install, job_runtime, run_burst
from workers import queues

SHOP_ID = "500105"
SECRET = "test_PAYMENTS-secret"
CRYPTO_TOKEN = "34567:AAtestCryptoPayToken"
ALICE_TG = 7001
FAST_RETRIES = (0.05, 0.1, 0.2)
# Provider calls give up after this in tests; the emulators hold "timeout" faults longer.
READ_TIMEOUT = 0.5


@pytest.fixture
def kassa() -> Iterator[YooKassaEmulator]:
    emu = YooKassaEmulator(shop_id=SHOP_ID, secret_key=SECRET, retry_delays=FAST_RETRIES,
                           fault_hold_max=2.0, webhook_timeout=10.0).start()
    yield emu
    emu.stop()


@pytest.fixture
def kassa_control(kassa) -> Iterator[YooKassaControl]:
    with YooKassaControl(kassa.url) as control:
        yield control


@pytest.fixture
def cryptopay() -> Iterator[CryptoPayEmulator]:
    emu = CryptoPayEmulator(tokens=(CRYPTO_TOKEN,), retry_delays=FAST_RETRIES,
                            fault_hold_max=2.0, webhook_timeout=10.0).start()
    yield emu
    emu.stop()


@pytest.fixture
def cryptopay_control(cryptopay) -> Iterator[CryptoPayControl]:
    with CryptoPayControl(cryptopay.url) as control:
        yield control


def payment_env(database_url: str, redis_url: str, telegram_url: str, kassa: YooKassaEmulator,
                cryptopay: CryptoPayEmulator, **extra: str) -> dict[str, str]:
    values = {"YOOKASSA_SHOP_ID": SHOP_ID, "YOOKASSA_SECRET_KEY": SECRET,
              "YOOKASSA_API_URL": kassa.api_url, "YOOKASSA_TRUSTED_IPS": "127.0.0.1/32",
              "CRYPTOBOT_TOKEN": CRYPTO_TOKEN, "CRYPTOBOT_API_URL": cryptopay.api_url}
    values.update(extra)
    return make_env(database_url, redis_url, telegram_url, **values)


@pytest.fixture
def pay_settings(database_url, redis_url, emulator, redis_conn, kassa, cryptopay) -> Settings:
    return load_settings(payment_env(database_url, redis_url, emulator.url, kassa, cryptopay))


@pytest.fixture
def runtime(pay_settings, monkeypatch) -> Iterator[Runtime]:
    """The runtime of the process under test; RQ jobs run in-process use it too."""
    monkeypatch.setattr(http, "READ_TIMEOUT", READ_TIMEOUT)
    yield from job_runtime(pay_settings, monkeypatch, "web")


@pytest.fixture
def bot_runtime(pay_settings, monkeypatch) -> Iterator[Runtime]:
    """The bot's runtime with both providers configured against their emulators."""
    from habitbot.runtime import build_runtime

    monkeypatch.setattr(http, "READ_TIMEOUT", 0.5)
    rt = build_runtime("bot", "bot", settings=pay_settings, configure_logging=False)
    yield rt
    rt.close()


def add_user(engine, emu_client, telegram_id: int, language: str = "en",
             timezone: str = "Europe/Berlin") -> int:
    emu_client.add_user(telegram_id, first_name=f"user{telegram_id}", language_code=language)
    with engine.begin() as conn:
        return conn.execute(insert(User).values(
            telegram_id=telegram_id, language=language, timezone=timezone)
            .returning(User.id)).scalar_one()


@pytest.fixture
def alice(engine, emu_client) -> int:
    """A user who writes in English from Berlin."""
    return add_user(engine, emu_client, ALICE_TG)


def run_jobs(runtime: Runtime) -> None:
    """Run the queued follow-up jobs (payment notices) in-process."""
    run_burst(runtime.redis, queues.HIGH)


def paid_top_up(engine, user_id: int, amount: int = 5000) -> int:
    """A YooKassa top-up already credited (as a webhook would), without the provider."""
    payment_id, _ = billing.create_payment(engine, user_id, "yookassa", "balance_topup",
                                           amount, "RUB")
    billing.complete_payment(engine, payment_id, amount, "RUB", f"yk-{payment_id}")
    return payment_id


def bot_texts(emu_client, chat_id: int) -> list[str]:
    """What the bot has sent to a chat, oldest first."""
    return [m["text"] for m in emu_client.messages(chat_id, sender="bot")]


def count(engine, model, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def payment_row(engine, payment_id: int) -> Payment:
    with engine.connect() as conn:
        return conn.execute(select(Payment).where(Payment.id == payment_id)).one()


def credits(engine) -> int:
    return count(engine, BalanceTransaction, BalanceTransaction.kind == "topup")


def alerts(engine, fragment: str = "") -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(select(AdminAlert.severity, AdminAlert.component,
                                   AdminAlert.message).order_by(AdminAlert.id)).all()
    texts = [f"[{r.severity}] {r.component}: {r.message}" for r in rows]
    return [t for t in texts if fragment in t]


# ---------------------------------------------------------------- the webhooks app, served

@dataclass
class WebApp:
    app: Flask
    runtime: Runtime
    url: str = ""

    def post(self, path: str, body: bytes, remote_addr: str = "127.0.0.1",
             headers: dict[str, str] | None = None):
        with self.app.test_client() as client:
            return client.post(path, data=body, headers={"Content-Type": "application/json",
                                                         **(headers or {})},
                               environ_base={"REMOTE_ADDR": remote_addr})


def make_web(settings: Settings, monkeypatch) -> WebApp:
    from webhooks.app import create_app

    monkeypatch.setattr(http, "READ_TIMEOUT", READ_TIMEOUT)
    app = create_app(settings, configure_logging=False)
    return WebApp(app, install(app.extensions["habitbot"], monkeypatch))


@contextmanager
def serving(web: WebApp) -> Iterator[WebApp]:
    """The app on a real port (threaded), so emulators can deliver webhooks to it."""
    server = make_server("127.0.0.1", 0, web.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    web.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield web
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def web(pay_settings, monkeypatch, kassa_control, cryptopay_control) -> Iterator[WebApp]:
    """The webhooks app served on a port; both emulators deliver their webhooks to it."""
    with serving(make_web(pay_settings, monkeypatch)) as served:
        kassa_control.set_webhook(f"{served.url}/webhooks/yookassa")
        cryptopay_control.set_webhook(f"{served.url}/webhooks/cryptobot")
        yield served
    served.runtime.close()
