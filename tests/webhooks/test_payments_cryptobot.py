"""POST /webhooks/cryptobot: signed Crypto Pay updates from the emulator, over HTTP; the
signature is the trust, the invoice id the key of exactly-once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from habitbot.config import load_settings
from habitbot.payments import service
from habitbot.payments.cryptobot import signature
from habitbot.services import billing
from tests.payments.support import (
    ALICE_TG,
    CRYPTO_TOKEN,
    alerts,
    credits,
    make_web,
    payment_env,
    payment_row,
    run_jobs,
    serving,
)
from tests.support.polling import wait_until

HEADER = "crypto-pay-api-signature"


def _invoice(web, user_id: int, **kwargs) -> tuple[int, int]:
    kwargs = kwargs or {"amount_minor": 30000}
    payment_type = "subscription" if "plan" in kwargs else "balance_topup"
    started = service.start_payment(web.runtime, user_id, "cryptobot", payment_type, **kwargs)
    row = payment_row(web.runtime.engine, started.payment_id)
    return started.payment_id, int(row.provider_payment_id)


def _update(invoice: dict, update_id: int = 1, update_type: str = "invoice_paid") -> bytes:
    return json.dumps({"update_id": update_id, "update_type": update_type,
                       "request_date": "2026-01-01T00:00:00.000Z",
                       "payload": invoice}).encode()


def _signed(body: bytes, token: str = CRYPTO_TOKEN) -> dict[str, str]:
    return {HEADER: signature(token, body)}


def test_paid_invoice_is_credited_and_the_user_is_told(web, alice, cryptopay_control,
                                                       emu_client):
    payment_id, invoice_id = _invoice(web, alice)
    cryptopay_control.pay(invoice_id, asset="USDT")
    [delivery] = cryptopay_control.wait_delivered(invoice_id)
    assert delivery["statuses"] == [200]
    assert billing.balance(web.runtime.engine, alice) == 30000
    run_jobs(web.runtime)
    [notice] = emu_client.messages(ALICE_TG, sender="bot")
    assert "300.00 ₽" in notice["text"]


def test_duplicates_and_new_update_ids_credit_exactly_once(web, alice, cryptopay_control):
    payment_id, invoice_id = _invoice(web, alice, plan="month")
    cryptopay_control.pay(invoice_id)
    cryptopay_control.wait_delivered(invoice_id)
    cryptopay_control.resend(invoice_id, copies=100, concurrent=True)
    cryptopay_control.resend(invoice_id, new_update_id=True, copies=3)
    delivered = cryptopay_control.wait_delivered(invoice_id, count=104, timeout=60)
    assert all(d["statuses"][-1] == 200 for d in delivered)
    assert payment_row(web.runtime.engine, payment_id).status == "succeeded"
    with web.runtime.engine.connect() as conn:
        from sqlalchemy import func, select

        from habitbot.models import Subscription
        assert conn.execute(select(func.count()).select_from(Subscription)).scalar_one() == 1


def test_bad_signature_is_401_and_changes_nothing(web, alice, cryptopay_control):
    payment_id, invoice_id = _invoice(web, alice)
    cryptopay_control.set_webhook(enabled=False)
    cryptopay_control.pay(invoice_id)
    cryptopay_control.set_webhook(enabled=True)
    [delivery] = cryptopay_control.resend(invoice_id, bad_signature=True)
    wait_until(lambda: cryptopay_control.deliveries(invoice_id)[-1]["statuses"],
               what="the forged update answered")
    assert cryptopay_control.deliveries(invoice_id)[-1]["statuses"][0] == 401
    assert payment_row(web.runtime.engine, payment_id).status == "pending"


@pytest.mark.parametrize("headers", [{}, {HEADER: ""}, {HEADER: "00" * 32},
                                     {HEADER: "not hex at all"}])
def test_missing_or_wrong_signature_is_401(web, headers):
    body = _update({"invoice_id": 1, "status": "paid"})
    answer = web.post("/webhooks/cryptobot", body, headers=headers)
    assert answer.status_code == 401 and answer.get_json()["error"] == "bad_signature"


def test_signature_made_with_another_token_is_401(web):
    body = _update({"invoice_id": 1, "status": "paid"})
    answer = web.post("/webhooks/cryptobot", body, headers=_signed(body, "999:other"))
    assert answer.status_code == 401


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"update_type": "invoice_paid"}',
                                  b'{"update_type": "invoice_paid", "payload": {"x": 1}}',
                                  b'{"update_type": 5, "payload": {}}'])
def test_signed_but_malformed_is_400(web, body):
    answer = web.post("/webhooks/cryptobot", body, headers=_signed(body))
    assert answer.status_code == 400 and answer.get_json()["error"] == "malformed"


def test_a_megabyte_body_is_413(web):
    body = b"{" + b" " * (1024 * 1024) + b"}"
    answer = web.post("/webhooks/cryptobot", body, headers=_signed(body))
    assert answer.status_code == 413


def test_other_update_types_are_ignored(web):
    body = _update({"invoice_id": 1}, update_type="invoice_expired")
    answer = web.post("/webhooks/cryptobot", body, headers=_signed(body))
    assert answer.status_code == 200 and answer.get_json()["outcome"] == "ignored"


def test_unknown_invoice_is_200_with_an_alert(web, alice):
    body = Path("/work/shared/samples/cryptobot_invoice_paid_fiat_rub.json").read_bytes()
    answer = web.post("/webhooks/cryptobot", body, headers=_signed(body))
    assert answer.status_code == 200 and answer.get_json()["outcome"] == "unknown"
    assert credits(web.runtime.engine) == 0
    assert alerts(web.runtime.engine, "32249668 is not one of ours")


@pytest.mark.parametrize("change", [{"amount": "299"}, {"fiat": "USD"},
                                    {"currency_type": "crypto", "asset": "USDT"},
                                    {"invoice_id": 777}])
def test_wrong_amount_currency_or_invoice_is_not_credited(web, alice, cryptopay_control,
                                                          change):
    payment_id, invoice_id = _invoice(web, alice)
    cryptopay_control.set_webhook(enabled=False)
    cryptopay_control.pay(invoice_id)
    invoice = {**cryptopay_control.invoice(invoice_id), **change}
    body = _update(invoice)
    answer = web.post("/webhooks/cryptobot", body, headers=_signed(body))
    assert answer.status_code == 200 and answer.get_json()["outcome"] == "mismatch"
    assert payment_row(web.runtime.engine, payment_id).status == "pending"
    assert billing.balance(web.runtime.engine, alice) == 0
    assert alerts(web.runtime.engine, "[CRITICAL]")


def test_unpaid_invoice_in_a_signed_update_credits_nothing(web, alice, cryptopay_control):
    payment_id, invoice_id = _invoice(web, alice)
    body = _update(cryptopay_control.invoice(invoice_id))  # status active
    answer = web.post("/webhooks/cryptobot", body, headers=_signed(body))
    assert answer.get_json()["outcome"] == "pending"
    assert payment_row(web.runtime.engine, payment_id).status == "pending"


def test_not_configured_is_503(web, monkeypatch):
    from dataclasses import replace

    monkeypatch.setattr(web.runtime, "settings",
                        replace(web.runtime.settings, cryptobot_token=None))
    body = _update({"invoice_id": 1})
    assert web.post("/webhooks/cryptobot", body, headers=_signed(body)).status_code == 503


def test_database_down_is_503_and_the_retry_credits(monkeypatch, alice, kassa, cryptopay,
                                                    cryptopay_control, database_url,
                                                    redis_url, emulator, pg_proxy, engine):
    settings = load_settings(payment_env(pg_proxy.url_for(database_url), redis_url,
                                         emulator.url, kassa, cryptopay,
                                         DB_CONNECT_TIMEOUT="1"))
    with serving(make_web(settings, monkeypatch)) as served:
        cryptopay_control.set_webhook(f"{served.url}/webhooks/cryptobot",
                                      retry_delays=[0.2] * 30)
        payment_id, invoice_id = _invoice(served, alice)
        pg_proxy.set_mode("refuse")
        cryptopay_control.pay(invoice_id)
        wait_until(lambda: 503 in [s for d in cryptopay_control.deliveries(invoice_id)
                                   for s in d["statuses"]],
                   timeout=20, what="a 503 while the database is down")
        pg_proxy.set_mode("pass")
        [delivery] = cryptopay_control.wait_delivered(invoice_id, timeout=30)
        assert delivery["statuses"][-1] == 200
        assert billing.balance(engine, alice) == 30000 and credits(engine) == 1
    served.runtime.close()
