"""GET /metrics: Prometheus text parsed by the reference parser, access control, counters shared
by every process through Redis, concurrent scrapes, a dead Redis."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, update

from habitbot import metrics
from habitbot.config import load_settings
from habitbot.models import HabitSchedule, User
from habitbot.services import habits, reminders
from habitbot.services.habits import HabitDraft
from habitbot.telegram.limiter import BULK
from tests.conftest import make_env
from tests.support.jobs import job_runtime
from webhooks.app import create_app
from workers import reminders as jobs

OUTSIDE = {"REMOTE_ADDR": "203.0.113.7"}
SCRAPE_TOKEN = "scrape-Secret-7Hq2vLm9xZp4Tk"


@pytest.fixture
def runtime(settings, monkeypatch):
    yield from job_runtime(settings, monkeypatch)


def _app(database_url, redis_url, api_url="http://127.0.0.1:9", **extra):
    return create_app(load_settings(make_env(database_url, redis_url, api_url, **extra)),
                      configure_logging=False)


def _scrape(app, headers=None, environ=None, query=""):
    with app.test_client() as client:
        return client.get(f"/metrics{query}", headers=headers or {},
                          environ_base=environ or {})


def _samples(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def test_a_local_scrape_parses_and_counts_requests_by_route(database_url, redis_url):
    app = _app(database_url, redis_url)
    with app.test_client() as client:
        client.get("/health")
        client.get("/no/such/page")
    response = _scrape(app)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    samples = _samples(response.get_data(as_text=True))
    assert samples['habitbot_http_requests_total{endpoint=unmatched,status=404}'] == 1
    assert any(k.startswith("habitbot_http_requests_total{endpoint=health.health")
               for k in samples)
    assert samples["habitbot_http_request_duration_seconds_count{endpoint=health.health}"] == 1
    # /health timed each of its checks.
    assert samples["habitbot_health_check_seconds_count{check=database}"] >= 1
    assert samples["habitbot_queue_length{queue=reminders}"] == 0
    assert samples["habitbot_degraded{}"] == 0


@pytest.mark.parametrize("environ, headers", [
    (OUTSIDE, {}),
    # Without trusted proxies a forged X-Forwarded-For changes nothing.
    (OUTSIDE, {"X-Forwarded-For": "127.0.0.1"}),
])
def test_not_public_without_a_token(database_url, redis_url, environ, headers):
    response = _scrape(_app(database_url, redis_url), headers, environ)
    assert response.status_code == 403
    assert b"habitbot_" not in response.data


def test_behind_a_proxy_the_forwarded_client_decides(database_url, redis_url):
    app = _app(database_url, redis_url, TRUSTED_PROXIES="1")
    local = {"REMOTE_ADDR": "127.0.0.1"}
    assert _scrape(app, {"X-Forwarded-For": "198.51.100.4"}, local).status_code == 403
    assert _scrape(app, {"X-Forwarded-For": "198.51.100.4, 127.0.0.1"}, local).status_code \
        == 200
    assert _scrape(app, {}, local).status_code == 403  # nothing forwarded: unknown client


def test_with_a_token_only_the_bearer_header_opens_it(database_url, redis_url):
    app = _app(database_url, redis_url, METRICS_TOKEN=SCRAPE_TOKEN)
    assert _scrape(app).status_code == 403  # even locally
    assert _scrape(app, {"Authorization": "Bearer wrong"}, OUTSIDE).status_code == 403
    assert _scrape(app, {}, OUTSIDE, f"?token={SCRAPE_TOKEN}").status_code == 403
    assert _scrape(app, {"Authorization": SCRAPE_TOKEN}, OUTSIDE).status_code == 403
    ok = _scrape(app, {"Authorization": f"Bearer {SCRAPE_TOKEN}"}, OUTSIDE)
    assert ok.status_code == 200 and b"habitbot_queue_length" in ok.data


def test_counters_from_other_processes_add_up(database_url, redis_url, redis_conn):
    code = ("import sys, redis; from habitbot import metrics; "
            "c = redis.Redis.from_url(sys.argv[1]); "
            "[metrics.incr(c, 'habitbot_webhooks_total', provider='yookassa', outcome='ok') "
            "for _ in range(5)]")
    children = [subprocess.Popen([sys.executable, "-c", code, redis_url]) for _ in range(3)]
    assert [child.wait(timeout=60) for child in children] == [0, 0, 0]
    samples = _samples(_scrape(_app(database_url, redis_url)).get_data(as_text=True))
    assert samples["habitbot_webhooks_total{outcome=ok,provider=yookassa}"] == 15


def test_reminders_and_sender_counters_appear(database_url, redis_url, engine, emulator,
                                              emu_client, runtime):
    emu_client.add_user(7101, first_name="Mia")
    with engine.begin() as conn:
        user_id = conn.execute(insert(User).values(telegram_id=7101, timezone="UTC",
                                                   language="en").returning(User.id)).scalar()
    habit = habits.create_habit(engine, user_id, HabitDraft("Run", reminder_times=[
        datetime.now(UTC).time().replace(microsecond=0)]))
    with engine.begin() as conn:  # due two minutes ago: sent, and late
        conn.execute(update(HabitSchedule).where(HabitSchedule.habit_id == habit.id)
                     .values(next_fire_at=datetime.now(UTC) - timedelta(minutes=2)))
    dispatches = reminders.claim_due(engine).dispatches
    assert jobs.send_batch([list(d) for d in dispatches]) == 1
    runtime.sender.send_message(7101, "hello", lane=BULK)
    runtime.sender.flush_counters()
    samples = _samples(_scrape(_app(database_url, redis_url, emulator.url)).get_data(
        as_text=True))
    assert samples["habitbot_reminders_total{outcome=sent}"] == 1
    assert samples["habitbot_reminders_total{outcome=late}"] == 1
    assert samples["habitbot_reminder_delay_seconds_bucket{le=60.0}"] == 0
    assert samples["habitbot_reminder_delay_seconds_bucket{le=300.0}"] == 1
    assert samples["habitbot_telegram_sends_total{lane=bulk,outcome=sent}"] == 2


def test_payment_notices_waiting_are_a_gauge(database_url, redis_url, redis_conn):
    from habitbot.payments import notify

    for item in ("payment:1:0", "refund:2:0"):
        redis_conn.lpush(notify.QUEUE_KEY, item)
    samples = _samples(_scrape(_app(database_url, redis_url)).get_data(as_text=True))
    assert samples["habitbot_payment_notices_queued{}"] == 2


def test_histogram_buckets_are_cumulative_and_labels_escaped(database_url, redis_url,
                                                             redis_conn):
    for seconds in (0.003, 0.2, 7.0, 9999.0):
        metrics.observe(redis_conn, "habitbot_job_duration_seconds", seconds,
                        job='we"ird\njob', status="success")
    text = _scrape(_app(database_url, redis_url)).get_data(as_text=True)
    [family] = [f for f in text_string_to_metric_families(text)
                if f.name == "habitbot_job_duration_seconds"]
    buckets = [(s.labels["le"], s.value) for s in family.samples if s.name.endswith("_bucket")]
    assert all(s.labels["job"] == 'we"ird\njob' for s in family.samples)
    values = [v for _, v in buckets]
    assert values == sorted(values) and buckets[-1] == ("+Inf", 4)
    assert dict(buckets)["0.005"] == 1 and dict(buckets)["0.25"] == 2


def test_an_unknown_metric_or_label_is_refused(redis_conn):
    with pytest.raises(ValueError):
        metrics.incr(redis_conn, "habitbot_typo_total")
    with pytest.raises(ValueError):
        metrics.incr(redis_conn, "habitbot_webhooks_total", provider="x")  # outcome missing


def test_concurrent_scrapes_while_counters_move(database_url, redis_url, redis_conn):
    app = _app(database_url, redis_url)
    stop = threading.Event()
    seen: list[float] = []
    errors: list[BaseException] = []

    def write() -> None:
        while not stop.is_set():
            metrics.incr(redis_conn, "habitbot_updates_total", kind="message")

    def scrape() -> None:
        try:
            for _ in range(15):
                response = _scrape(app)
                assert response.status_code == 200
                samples = _samples(response.get_data(as_text=True))
                seen.append(samples.get("habitbot_updates_total{kind=message}", 0))
        except BaseException as exc:  # reported below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    scrapers = [threading.Thread(target=scrape) for _ in range(6)]
    for thread in scrapers:
        thread.start()
    for thread in scrapers:
        thread.join()
    stop.set()
    writer.join()
    assert not errors and len(seen) == 90 and max(seen) > 0


def test_a_dead_redis_still_answers_and_says_so(database_url, redis_url, redis_proxy):
    app = _app(database_url, redis_proxy.url_for(redis_url))
    redis_proxy.set_mode("refuse")
    response = _scrape(app)
    assert response.status_code == 200
    samples = _samples(response.get_data(as_text=True))
    assert samples["habitbot_metrics_source_up{source=redis}"] == 0
    assert samples["habitbot_metrics_source_up{source=database}"] == 1


def test_writing_a_metric_never_breaks_the_work(redis_proxy, redis_url):
    conn = redis.Redis.from_url(redis_proxy.url_for(redis_url), socket_timeout=0.5,
                                socket_connect_timeout=0.5)
    redis_proxy.set_mode("refuse")
    metrics.incr(conn, "habitbot_updates_total", kind="message")  # logged, not raised
    conn.close()
