"""54-FZ receipts: the receipt a YooKassa payment carries (a plan is a service paid in full, a
top-up an advance), the buyer's e-mail it needs, a shop that refuses payments without one, and
the migration that stores the e-mail — against the YooKassa emulator, real PostgreSQL and
Redis."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from habitbot.config import load_settings
from habitbot.db import make_engine
from habitbot.models import Payment, User
from habitbot.payments import http, receipts, service
from habitbot.payments.receipts import InvalidEmail, build_receipt, clean_email
from habitbot.runtime import Runtime
from habitbot.services import schema
from habitbot.services.billing import BillingError
from habitbot.services.schema import check_schema, run_deploy_gate
from tests.payments.support import READ_TIMEOUT, alerts, count, payment_env, payment_row
from tests.support.jobs import job_runtime

ALICE_EMAIL = "alice@example.com"


def receipts_runtime(database_url, redis_url, emulator, kassa, cryptopay, monkeypatch,
                     **env: str) -> Iterator[Runtime]:
    monkeypatch.setattr(http, "READ_TIMEOUT", READ_TIMEOUT)
    settings = load_settings(payment_env(database_url, redis_url, emulator.url, kassa,
                                         cryptopay, YOOKASSA_RECEIPTS="on", **env))
    yield from job_runtime(settings, monkeypatch, "web")


@pytest.fixture
def shop_runtime(database_url, redis_url, emulator, redis_conn, kassa, cryptopay,
                 monkeypatch) -> Iterator[Runtime]:
    """Receipts on, VAT 20 % (vat_code 4), simplified tax system (tax_system_code 2)."""
    yield from receipts_runtime(database_url, redis_url, emulator, kassa, cryptopay,
                                monkeypatch, YOOKASSA_VAT_CODE="4",
                                YOOKASSA_TAX_SYSTEM_CODE="2")


@pytest.fixture
def alice_with_email(engine, alice) -> int:
    with engine.begin() as conn:
        conn.execute(update(User).where(User.id == alice).values(receipt_email=ALICE_EMAIL))
    return alice


# ------------------------------------------------------------------ the receipt itself


def test_a_top_up_is_an_advance_receipt():
    assert build_receipt(email=ALICE_EMAIL, description="HabitBot balance top-up",
                         amount_minor=30000, currency="RUB", payment_type="balance_topup",
                         vat_code=1) == {
        "customer": {"email": ALICE_EMAIL},
        "items": [{"description": "HabitBot balance top-up", "quantity": "1.00",
                   "amount": {"value": "300.00", "currency": "RUB"}, "vat_code": 1,
                   "payment_mode": "advance", "payment_subject": "payment"}]}


def test_a_subscription_is_a_service_paid_in_full_with_the_tax_system():
    receipt = build_receipt(email=ALICE_EMAIL, description="HabitBot premium for 1 month",
                            amount_minor=19900, currency="RUB", payment_type="subscription",
                            vat_code=4, tax_system_code=2)
    [item] = receipt["items"]
    assert (item["payment_mode"], item["payment_subject"]) == ("full_payment", "service")
    assert item["amount"] == {"value": "199.00", "currency": "RUB"} and item["vat_code"] == 4
    assert receipt["tax_system_code"] == 2


def test_a_long_description_is_cut_to_what_yookassa_takes():
    receipt = build_receipt(email=ALICE_EMAIL, description="x" * 300, amount_minor=100,
                            currency="RUB", payment_type="balance_topup", vat_code=1)
    assert receipt["items"][0]["description"] == "x" * 128
    assert "tax_system_code" not in receipt


def test_a_payment_without_a_receipt_kind_is_refused():
    with pytest.raises(ValueError):
        build_receipt(email=ALICE_EMAIL, description="?", amount_minor=100, currency="RUB",
                      payment_type="donation", vat_code=1)


@pytest.mark.parametrize("raw, stored", [
    ("alice@example.com", "alice@example.com"),
    ("  Bob.Smith+habits@Mail.Example.RU \n", "Bob.Smith+habits@mail.example.ru"),
    ("o'neil@sub-domain.example.co", "o'neil@sub-domain.example.co"),
])
def test_sane_addresses_are_accepted(raw, stored):
    assert clean_email(raw) == stored


@pytest.mark.parametrize("raw", [
    None, "", "   ", "alice", "alice@", "@example.com", "alice@example", "alice@@example.com",
    "alice example@example.com", "alice@exa mple.com", ".alice@example.com",
    "alice..b@example.com", "alice@-example.com", "alice@example.c", "алиса@пример.рф",
    "<b>x</b>@example.com", "a" * 65 + "@example.com",
    "a@" + ".".join(["b" * 60] * 5) + ".com",  # over 254 characters
])
def test_anything_else_is_refused_without_echoing_it(raw):
    with pytest.raises(InvalidEmail) as info:
        clean_email(raw)
    assert not (raw or "").strip() or raw.strip() not in str(info.value)


def test_an_address_of_254_characters_is_the_longest_accepted():
    longest = "a" * 64 + "@" + ".".join(["b" * 61] * 3) + ".com"
    assert len(longest) == 254 and clean_email(longest) == longest
    with pytest.raises(InvalidEmail):
        clean_email("a" + longest)


# ------------------------------------------------------------------ payments with receipts


def test_a_top_up_is_created_with_its_receipt_and_registered_once_paid(
        shop_runtime, alice_with_email, kassa_control):
    started = service.start_payment(shop_runtime, alice_with_email, "yookassa",
                                    "balance_topup", amount_minor=30000)
    row = payment_row(shop_runtime.engine, started.payment_id)
    assert kassa_control.receipt(row.provider_payment_id) == {
        "customer": {"email": ALICE_EMAIL},
        "items": [{"description": "HabitBot balance top-up", "quantity": "1.00",
                   "amount": {"value": "300.00", "currency": "RUB"}, "vat_code": 4,
                   "payment_mode": "advance", "payment_subject": "payment"}],
        "tax_system_code": 2}
    assert kassa_control.payment(row.provider_payment_id)["receipt_registration"] == "pending"
    kassa_control.pay(row.provider_payment_id)
    assert kassa_control.payment(row.provider_payment_id)["receipt_registration"] == \
        "succeeded"


def test_a_plan_bought_in_russian_has_a_service_receipt(shop_runtime, engine,
                                                        alice_with_email, kassa_control):
    with engine.begin() as conn:
        conn.execute(update(User).where(User.id == alice_with_email).values(language="ru"))
    started = service.start_payment(shop_runtime, alice_with_email, "yookassa",
                                    "subscription", plan="year")
    row = payment_row(shop_runtime.engine, started.payment_id)
    receipt = kassa_control.receipt(row.provider_payment_id)
    [item] = receipt["items"]
    assert item["description"] == row.description == \
        kassa_control.payment(row.provider_payment_id)["description"]
    assert item["amount"] == {"value": "1490.00", "currency": "RUB"}
    assert (item["payment_mode"], item["payment_subject"]) == ("full_payment", "service")


def test_receipts_off_sends_no_receipt(runtime, alice_with_email, kassa_control):
    started = service.start_payment(runtime, alice_with_email, "yookassa", "balance_topup",
                                    amount_minor=30000)
    provider_id = payment_row(runtime.engine, started.payment_id).provider_payment_id
    assert kassa_control.receipt(provider_id) is None
    assert "receipt_registration" not in kassa_control.payment(provider_id)


def test_without_an_email_nothing_is_written_or_sent(shop_runtime, alice, kassa_control):
    with pytest.raises(BillingError) as info:
        service.start_payment(shop_runtime, alice, "yookassa", "subscription", plan="month")
    assert info.value.code == "receipt_email_required"
    assert count(shop_runtime.engine, Payment) == 0 and kassa_control.payments() == []


def test_cryptobot_needs_no_email(shop_runtime, alice, cryptopay_control):
    started = service.start_payment(shop_runtime, alice, "cryptobot", "subscription",
                                    plan="month")
    assert payment_row(shop_runtime.engine, started.payment_id).status == "pending"


def test_a_shop_that_requires_receipts_refuses_a_payment_without_one(runtime, alice,
                                                                     kassa_control):
    kassa_control.require_receipts()
    with pytest.raises(BillingError) as info:
        service.start_payment(runtime, alice, "yookassa", "balance_topup", amount_minor=30000)
    assert info.value.code == "provider_error"
    [create] = kassa_control.requests("create_payment")
    assert create["status"] == 400
    [row] = _rows(runtime)
    assert row.status == "failed"
    assert row.failure_reason == "yookassa create: HTTP 400 Receipt is missing or illegal"
    assert alerts(runtime.engine, "Receipt is missing or illegal")
    assert kassa_control.payments() == []


def test_the_email_never_reaches_the_logs(shop_runtime, alice, kassa_control, caplog):
    kassa_control.require_receipts()
    caplog.set_level(logging.DEBUG)
    receipts.store_email(shop_runtime.engine, alice, "secret.mailbox@example.com")
    started = service.start_payment(shop_runtime, alice, "yookassa", "balance_topup",
                                    amount_minor=30000)
    kassa_control.pay(payment_row(shop_runtime.engine, started.payment_id).provider_payment_id)
    service.check_payment(shop_runtime, started.payment_id, alice)
    assert caplog.records
    assert not [r for r in caplog.records if "secret.mailbox" in _everything(r)]


def _everything(record: logging.LogRecord) -> str:
    return record.getMessage() + repr(vars(record))


def _rows(runtime: Runtime) -> list:
    with runtime.engine.connect() as conn:
        return list(conn.execute(select(Payment).order_by(Payment.id)).all())


# ------------------------------------------------------------------ the stored e-mail


def test_store_email_validates_then_saves(engine, alice):
    assert receipts.stored_email(engine, alice) is None
    with pytest.raises(InvalidEmail):
        receipts.store_email(engine, alice, "not an address")
    assert receipts.stored_email(engine, alice) is None
    assert receipts.store_email(engine, alice, " Alice@Example.COM ") == "Alice@example.com"
    assert receipts.stored_email(engine, alice) == "Alice@example.com"


def test_a_database_error_never_carries_the_address(pg_proxy, database_url, alice):
    broken = make_engine(pg_proxy.url_for(database_url), "cli", connect_timeout=1)
    pg_proxy.set_mode("refuse")
    try:
        with pytest.raises(receipts.EmailNotSaved) as info:
            receipts.store_email(broken, alice, "hidden@example.com")
    finally:
        broken.dispose()
    assert "hidden" not in str(info.value) and info.value.__cause__ is None


# ------------------------------------------------------------------ the migration


@pytest.fixture
def scratch_engine(scratch_database):
    eng = make_engine(scratch_database, "cli")
    yield eng
    eng.dispose()


def _columns(engine) -> set[str]:
    with engine.connect() as conn:
        return {c["name"] for c in inspect(conn).get_columns("users")}


def test_migration_0007_adds_a_validated_nullable_column_and_reverts(scratch_engine,
                                                                     scratch_database):
    assert run_deploy_gate(scratch_engine).ok
    assert "receipt_email" in _columns(scratch_engine)
    with scratch_engine.connect() as conn:
        validated = conn.execute(text(
            "SELECT convalidated FROM pg_constraint "
            "WHERE conname = 'ck_users_receipt_email_shape'")).scalar_one()
    assert validated is True
    with scratch_engine.begin() as conn:
        conn.execute(insert(User).values(telegram_id=1, receipt_email=None))
        conn.execute(insert(User).values(telegram_id=2, receipt_email="a@b.cd"))
    with pytest.raises(IntegrityError), scratch_engine.begin() as conn:
        conn.execute(insert(User).values(telegram_id=3, receipt_email="no-at-sign"))

    command.downgrade(schema.alembic_config_for(scratch_database), "0006")
    assert "receipt_email" not in _columns(scratch_engine)
    assert "column users.receipt_email is missing" in check_schema(scratch_engine).summary
    assert run_deploy_gate(scratch_engine).ok
    assert "receipt_email" in _columns(scratch_engine)
