"""The provider clients on their own: money conversion, parsing the real samples, the Crypto
Pay signature, retries with one idempotence key, timeouts, and no secret in any error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from habitbot.payments import cryptobot, money, yookassa
from habitbot.payments.cryptobot import CryptoBotClient
from habitbot.payments.http import ProviderHttp, ProviderRefused, ProviderUnavailable
from habitbot.payments.yookassa import YooKassaClient
from habitbot.sandbox.cryptopay_emulator import sign
from tests.payments.support import CRYPTO_TOKEN, SECRET, SHOP_ID

SAMPLES = Path("/work/shared/samples")


def _sample(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


@pytest.mark.parametrize("minor, currency, text", [(19900, "RUB", "199.00"), (1, "USD", "0.01"),
                                                   (150, "XTR", "150"), (100000, "RUB",
                                                                         "1000.00")])
def test_money_round_trips(minor, currency, text):
    assert money.to_text(minor, currency) == text
    assert money.to_minor(text, currency) == minor


@pytest.mark.parametrize("value", ["1.001", "abc", None, True, "NaN", "Infinity", [], "1e-3"])
def test_money_refuses_what_is_not_an_exact_amount(value):
    with pytest.raises(ValueError):
        money.to_minor(value, "RUB")


def test_real_yookassa_samples_parse():
    succeeded = yookassa.parse_payment(_sample("yookassa_payment_succeeded.json")["object"])
    assert (succeeded.status, succeeded.amount_minor, succeeded.currency,
            succeeded.account_id) == ("succeeded", 100, "RUB", "500105")
    assert succeeded.our_payment_id is None  # its metadata has no payment_id
    created = yookassa.parse_payment(_sample("yookassa_payment_create_response_pending.json"))
    assert created.confirmation_url.startswith("https://yoomoney.ru/")
    refund = yookassa.parse_refund(_sample("yookassa_refund_succeeded.json")["object"])
    assert (refund.amount_minor, refund.payment_id) == (25000,
                                                        "21b23365-000f-500b-9000-070fa3554403")


@pytest.mark.parametrize("metadata, expected", [({"payment_id": "42"}, 42),
                                                ({"payment_id": 42}, 42),
                                                ({"payment_id": "-1"}, None),
                                                ({"payment_id": "1" * 30}, None),
                                                ({}, None)])
def test_our_payment_id_comes_only_from_clean_metadata(metadata, expected):
    data = {**_sample("yookassa_payment_succeeded.json")["object"], "metadata": metadata}
    assert yookassa.parse_payment(data).our_payment_id == expected


def test_unreadable_payment_objects_are_refused():
    for broken in ({}, {"id": "x", "status": "succeeded"}, [],
                   {"id": "x", "status": "s", "amount": {"value": "1.001", "currency": "RUB"}}):
        with pytest.raises(yookassa.MalformedAnswer):
            yookassa.parse_payment(broken)


def test_crypto_pay_samples_parse_and_sign():
    fiat = cryptobot.parse_invoice(_sample("cryptobot_invoice_paid_fiat_rub.json")["payload"])
    assert (fiat.invoice_id, fiat.amount_minor, fiat.currency, fiat.status) == (
        32249668, 10000, "RUB", "paid")
    crypto = cryptobot.parse_invoice(_sample("cryptobot_invoice_paid.json")["payload"])
    assert (crypto.currency_type, crypto.currency) == ("crypto", "USDT")
    body = b'{"update_id":1}'
    assert cryptobot.signature(CRYPTO_TOKEN, body) == sign(CRYPTO_TOKEN, body)
    assert cryptobot.signature_valid(CRYPTO_TOKEN, body, sign(CRYPTO_TOKEN, body).upper())
    assert not cryptobot.signature_valid(CRYPTO_TOKEN, body + b" ", sign(CRYPTO_TOKEN, body))
    assert not cryptobot.signature_valid(CRYPTO_TOKEN, body, None)


def test_retries_reuse_the_key_then_give_up_without_the_secret(kassa, kassa_control):
    client = YooKassaClient(kassa.api_url, SHOP_ID, SECRET,
                            ProviderHttp("yookassa", read_timeout=0.5, backoff=0.01))
    kassa_control.add_fault("5xx", "create_payment")
    with pytest.raises(ProviderUnavailable) as caught:
        client.create_payment(amount_minor=100, currency="RUB", idempotence_key="k-1",
                              return_url="https://t.me/x", description="d", metadata={})
    assert SECRET not in str(caught.value) and "HTTP 500" in str(caught.value)
    attempts = kassa_control.requests("create_payment")
    assert [a["idempotence_key"] for a in attempts] == ["k-1"] * 3
    kassa_control.clear_faults()
    kassa_control.add_fault("timeout", "get_payment", count=1)
    kassa_control.add_fault("429", "get_payment", count=1, retry_after=0)
    created = client.create_payment(amount_minor=100, currency="RUB", idempotence_key="k-1",
                                    return_url="https://t.me/x", description="d", metadata={})
    assert client.get_payment(created.id).id == created.id
    client.close()


def test_refusals_are_not_retried(kassa, kassa_control):
    client = YooKassaClient(kassa.api_url, SHOP_ID, "wrong-secret",
                            ProviderHttp("yookassa", backoff=0.01))
    with pytest.raises(ProviderRefused) as caught:
        client.get_payment("2203aa1d-000f-5000-8000-17102541fd31")
    assert caught.value.status == 401 and caught.value.code == "invalid_credentials"
    assert "wrong-secret" not in str(caught.value)
    assert len(kassa_control.requests("get_payment")) == 1


def test_crypto_pay_client_creates_and_reads_invoices(cryptopay, cryptopay_control):
    client = CryptoBotClient(cryptopay.api_url, CRYPTO_TOKEN,
                             ProviderHttp("cryptobot", backoff=0.01))
    invoice = client.create_invoice(amount_minor=12345, fiat="USD", payload="77",
                                    description="top-up", accepted_assets="USDT,TON",
                                    expires_in=600, return_url="https://t.me/bot")
    assert (invoice.amount_minor, invoice.currency, invoice.our_payment_id) == (12345, "USD", 77)
    assert client.get_invoices([invoice.invoice_id, 999999]) == {
        invoice.invoice_id: client.get_invoices([invoice.invoice_id])[invoice.invoice_id]}
    bad = CryptoBotClient(cryptopay.api_url, "1:wrong", ProviderHttp("cryptobot"))
    with pytest.raises(ProviderRefused) as caught:
        bad.get_invoices([invoice.invoice_id])
    assert caught.value.code == "UNAUTHORIZED" and "1:wrong" not in str(caught.value)
