"""GET /metrics: Prometheus text format for every process (counters shared through Redis, see
`habitbot.metrics`) plus gauges read at scrape time: queue lengths, failed jobs, payment
notices waiting, open payments, DEGRADED mode and the Telegram sender's counters.

Not public: with METRICS_TOKEN set a scrape needs `Authorization: Bearer <token>`; without it
only a client on this host (127.0.0.1 / ::1, after TRUSTED_PROXIES) may scrape.
"""

from __future__ import annotations

import hmac
import logging

import redis
from flask import Blueprint, Response, current_app, request
from rq import Queue
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from habitbot import metrics
from habitbot.models import Payment
from habitbot.payments import notify
from habitbot.runtime import Runtime
from habitbot.services.billing import OPEN_STATUSES
from habitbot.telegram.sender import metrics as sender_metrics
from webhooks.proxies import request_ip
from workers import queues

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SEND_OUTCOMES = ("sent", "retried", "failed_permanent", "failed_transient", "blocked",
                 "skipped_blocked")


def _allowed(runtime: Runtime) -> bool:
    token = runtime.settings.metrics_token
    if token:
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else ""
        return hmac.compare_digest(given.encode(), token.encode())
    address = request_ip(runtime.settings.trusted_proxies)
    return address is not None and address.is_loopback


def _sender_families(conn: redis.Redis) -> list[tuple[metrics.Metric, dict[str, float]]]:
    sends: dict[str, float] = {}
    limited: dict[str, float] = {}
    waited: dict[str, float] = {}
    for field, value in sender_metrics(conn).items():
        lane, _, what = field.partition(":")
        if what in SEND_OUTCOMES:
            sends[metrics.labelled("habitbot_telegram_sends_total", lane=lane,
                                   outcome=what)] = value
        elif what == "rate_limited":
            limited[metrics.labelled("habitbot_telegram_429_total", lane=lane)] = value
        elif what == "wait_ms":
            waited[metrics.labelled("habitbot_limiter_wait_seconds_total", lane=lane)] = \
                value / 1000
    return [
        metrics.family("habitbot_telegram_sends_total", "counter",
                       "Bot API sends by lane and outcome", sends),
        metrics.family("habitbot_telegram_429_total", "counter",
                       "429 answers from Telegram by lane", limited),
        metrics.family("habitbot_limiter_wait_seconds_total", "counter",
                       "Time senders waited for a rate-limiter token", waited),
    ]


def _queue_families(conn: redis.Redis) -> list[tuple[metrics.Metric, dict[str, float]]]:
    lengths, failed = {}, {}
    for name in queues.ALL:
        queue = Queue(name, connection=conn)
        lengths[metrics.labelled("habitbot_queue_length", queue=name)] = queue.count
        failed[metrics.labelled("habitbot_failed_jobs", queue=name)] = len(
            FailedJobRegistry(queue=queue))
    return [metrics.family("habitbot_queue_length", "gauge", "Jobs waiting per queue", lengths),
            metrics.family("habitbot_failed_jobs", "gauge", "Failed jobs kept per queue",
                           failed),
            metrics.family("habitbot_payment_notices_queued", "gauge",
                           "Payment and refund notices not yet sent to the users",
                           {"habitbot_payment_notices_queued": notify.pending(conn)})]


def _payment_family(runtime: Runtime) -> list[tuple[metrics.Metric, dict[str, float]]]:
    with runtime.engine.connect() as conn:  # through the partial index on open payments
        rows = conn.execute(select(Payment.provider, Payment.status, func.count())
                            .where(Payment.status.in_(OPEN_STATUSES))
                            .group_by(Payment.provider, Payment.status)).all()
    values = {metrics.labelled("habitbot_payments_open", provider=r[0], status=r[1]): r[2]
              for r in rows}
    return [metrics.family("habitbot_payments_open", "gauge",
                           "Payments not yet final, by provider and status", values)]


@bp.get("/metrics")
def scrape() -> Response:
    runtime: Runtime = current_app.extensions["habitbot"]
    if not _allowed(runtime):
        return Response("forbidden\n", status=403, content_type="text/plain")
    extra: list[tuple[metrics.Metric, dict[str, float]]] = []
    up = {"redis": 1.0, "database": 1.0}
    samples: dict[str, float] = {}
    try:
        samples = metrics.stored(runtime.redis)
        extra += _sender_families(runtime.redis) + _queue_families(runtime.redis)
    except redis.RedisError:
        up["redis"] = 0.0
    try:
        extra += _payment_family(runtime)
    except SQLAlchemyError:
        up["database"] = 0.0
    extra.append(metrics.family(
        "habitbot_degraded", "gauge", "1 while the process runs in DEGRADED mode",
        {"habitbot_degraded": float(runtime.guard.degraded)}))
    extra.append(metrics.family(
        "habitbot_metrics_source_up", "gauge", "Whether /metrics could read each source",
        {metrics.labelled("habitbot_metrics_source_up", source=k): v for k, v in up.items()}))
    response = Response(metrics.exposition(samples, extra), content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-store"
    return response
