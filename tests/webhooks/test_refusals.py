"""Refused requests change nothing: a loop of untrusted, forged, malformed or oversized
requests writes no row (at most one alert per cooldown), is counted in the metrics, and costs
a log line a minute, not one per request."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sqlalchemy import func, select

from habitbot import metrics
from habitbot.models import Base
from habitbot.payments.cryptobot import signature
from habitbot.services.alerts import COMPONENT_BUDGET
from tests.payments.support import CRYPTO_TOKEN, alerts
from webhooks.app import create_app

LOOP = 200


def _rows(engine) -> dict[str, int]:
    """How many rows every table has."""
    with engine.connect() as conn:
        return {table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for table in Base.metadata.sorted_tables}


def _counted(web, series: str) -> float:
    return metrics.stored(web.runtime.redis).get(series, 0)


def _lines(caplog, message: str) -> int:
    return sum(1 for record in caplog.records if record.getMessage() == message)


def _notification(provider_id: str = "2203aa1d-000f-5000-8000-17102541fd31") -> bytes:
    return json.dumps({"type": "notification", "event": "payment.succeeded",
                       "object": {"id": provider_id, "status": "succeeded"}}).encode()


def test_untrusted_notifications_raise_one_alert_and_are_all_counted(web, alice, caplog,
                                                                     kassa_control):
    caplog.set_level(logging.INFO)
    before = _rows(web.runtime.engine)
    for n in range(LOOP):
        answer = web.post("/webhooks/yookassa", _notification(),
                          remote_addr=f"203.0.113.{n % 250 + 1}")
        assert answer.status_code == 403
    after = _rows(web.runtime.engine)
    assert after == {**before, "admin_alerts": before["admin_alerts"] + 1}
    assert len(alerts(web.runtime.engine, "was refused (not in YOOKASSA_TRUSTED_IPS)")) == 1
    assert _counted(web, 'habitbot_webhooks_total{provider="yookassa",'
                         'outcome="untrusted_source"}') == LOOP
    assert _counted(web, 'habitbot_alerts_total{status="suppressed"}') == LOOP - 1
    assert _lines(caplog, "YooKassa notification from an untrusted address") == 1
    assert kassa_control.requests() == []  # nothing was re-read either


def test_a_forged_crypto_pay_signature_loop_writes_nothing(web, alice, caplog):
    caplog.set_level(logging.INFO)
    body = json.dumps({"update_id": 1, "update_type": "invoice_paid",
                       "payload": {"invoice_id": 1, "status": "paid"}}).encode()
    forgeries = [{}, {"crypto-pay-api-signature": "00" * 32},
                 {"crypto-pay-api-signature": "not hex"},
                 {"crypto-pay-api-signature": CRYPTO_TOKEN}]
    before = _rows(web.runtime.engine)
    for n in range(LOOP):
        answer = web.post("/webhooks/cryptobot", body, headers=forgeries[n % len(forgeries)])
        assert answer.status_code == 401
    assert _rows(web.runtime.engine) == before
    assert _counted(web, 'habitbot_webhooks_total{provider="cryptobot",'
                         'outcome="bad_signature"}') == LOOP
    assert _lines(caplog, "Crypto Pay update with a bad or missing signature") == 1


def test_malformed_and_oversized_loops_write_nothing(web, alice, caplog, kassa_control):
    caplog.set_level(logging.INFO)
    before = _rows(web.runtime.engine)
    for n in range(LOOP // 2):
        assert web.post("/webhooks/yookassa", b"{not json " + str(n).encode()
                        ).status_code == 400
    huge = b"{" + b" " * (128 * 1024) + b"}"
    for _ in range(20):
        assert web.post("/webhooks/yookassa", huge).status_code == 413
        assert web.post("/webhooks/cryptobot", huge).status_code == 413
    assert _rows(web.runtime.engine) == before
    assert _counted(web, 'habitbot_webhooks_total{provider="yookassa",outcome="malformed"}') \
        == LOOP // 2
    assert _counted(web, 'habitbot_webhooks_total{provider="yookassa",outcome="too_large"}') \
        == 20
    assert _counted(web, 'habitbot_webhooks_total{provider="cryptobot",outcome="too_large"}') \
        == 20
    assert _lines(caplog, "malformed notification") == 1
    assert _lines(caplog, "notification body too large") == 2  # one per provider
    assert kassa_control.requests() == []


def test_health_and_refused_metrics_scrapes_write_nothing_but_are_counted(web, alice):
    before = _rows(web.runtime.engine)
    outside = {"REMOTE_ADDR": "198.51.100.9"}
    with web.app.test_client() as client:
        for _ in range(50):
            assert client.get("/metrics", environ_base=outside).status_code == 403
            assert client.get("/health").status_code in (200, 503)
    assert _rows(web.runtime.engine) == before
    assert _counted(web, 'habitbot_http_requests_total{endpoint="metrics.scrape",'
                         'status="403"}') == 50


def test_a_refused_request_never_sees_the_database(pay_settings, pg_proxy, database_url,
                                                   monkeypatch, redis_conn):
    """With the database unreachable, refusals answer as before and queue nothing."""
    from dataclasses import replace

    from habitbot.services.alerts import PENDING_KEY

    settings = replace(pay_settings, database_url=pg_proxy.url_for(database_url),
                       db_connect_timeout=1)
    app = create_app(settings, configure_logging=False)
    try:
        pg_proxy.set_mode("refuse")
        with app.test_client() as client:
            for n in range(LOOP):
                answer = client.post("/webhooks/yookassa", data=_notification(),
                                     environ_base={"REMOTE_ADDR": f"192.0.2.{n % 250 + 1}"})
                assert answer.status_code == 403
                assert client.post("/webhooks/cryptobot", data=b"{}").status_code == 401
        assert redis_conn.llen(PENDING_KEY) <= 1  # the one alert, waiting for the database
    finally:
        pg_proxy.set_mode("pass")
        app.extensions["health"].close()
        app.extensions["habitbot"].close()


def test_unknown_ids_in_signed_updates_are_bounded_alerts(web, alice):
    """Each unknown invoice has its own alert fingerprint: past the component's budget they
    are only logged and counted, not a row (and a message) each."""
    sample = json.loads(Path("/work/shared/samples/cryptobot_invoice_paid_fiat_rub.json")
                        .read_bytes())
    before = _rows(web.runtime.engine)
    for n in range(COMPONENT_BUDGET * 3):
        sample["payload"]["invoice_id"] = 90000000 + n
        sample["update_id"] = n + 1
        body = json.dumps(sample).encode()
        answer = web.post("/webhooks/cryptobot", body,
                          headers={"crypto-pay-api-signature": signature(CRYPTO_TOKEN, body)})
        assert answer.status_code == 200 and answer.get_json()["outcome"] == "unknown"
    after = _rows(web.runtime.engine)
    assert after == {**before, "admin_alerts": before["admin_alerts"] + COMPONENT_BUDGET + 1}
    assert len(alerts(web.runtime.engine, "is not one of ours")) == COMPONENT_BUDGET
    assert len(alerts(web.runtime.engine, "more than 20 different payments cryptobot")) == 1
