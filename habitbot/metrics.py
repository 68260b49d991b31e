"""Metrics every process shares through Redis, and their Prometheus exposition.

Counters and histograms live in two Redis hashes, so the bot, the gunicorn workers, the RQ
workers (whose work horses are forked per job) and workers on a second host all add to the
same numbers, and `/metrics` on any web worker shows all of them. Writing a metric never
breaks the work: a Redis failure is logged once a minute and the figure is lost.

A field of the counters hash is ``name{label="value",...}``; a histogram adds
``name_bucket{...,le="0.5"}`` (the observations that fell in that bucket only: three writes per
observation; `exposition` makes them cumulative, as Prometheus expects), ``name_sum{...}`` and
``name_count{...}`` fields. Label values are escaped the Prometheus way, so a field is
exactly the sample line's left side.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from habitbot.redis_client import KEY_PREFIX

if TYPE_CHECKING:
    from redis.commands.core import Script

log = logging.getLogger(__name__)

COUNTERS_KEY = f"{KEY_PREFIX}metrics:counters"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
           300.0, 600.0)
_warned_at = 0.0


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # counter | histogram | gauge
    help: str
    labels: tuple[str, ...] = ()


# Every metric written through this module, so /metrics can print HELP and TYPE for each and a
# typo in a name fails loudly in tests instead of creating a new series.
METRICS = {m.name: m for m in (
    Metric("habitbot_updates_total", "counter", "Telegram updates handled by the bot",
           ("kind",)),
    Metric("habitbot_handler_errors_total", "counter", "Bot handlers that raised", ("kind",)),
    Metric("habitbot_updates_dropped_total", "counter",
           "Telegram updates confirmed without running a handler: throttled (a user's flood), "
           "queue_full (the chat's queue bound), duplicate (handled before a restart), "
           "interrupted (a stop cut its handler short)", ("reason",)),
    Metric("habitbot_job_duration_seconds", "histogram", "Periodic job run time",
           ("job", "status")),
    Metric("habitbot_job_runs_total", "counter", "Periodic job runs by outcome",
           ("job", "status")),
    Metric("habitbot_reminders_total", "counter",
           "Reminder deliveries by outcome: claimed, sent, late (sent over a minute after "
           "their time), failed, skipped, missed, requeued", ("outcome",)),
    Metric("habitbot_reminder_delay_seconds", "histogram",
           "From a reminder's time to its send"),
    Metric("habitbot_http_requests_total", "counter", "Requests to the web app",
           ("endpoint", "status")),
    Metric("habitbot_http_request_duration_seconds", "histogram",
           "Web app request time", ("endpoint",)),
    Metric("habitbot_webhooks_total", "counter", "Provider notifications by outcome",
           ("provider", "outcome")),
    Metric("habitbot_payments_credited_total", "counter", "Payments credited (exactly once)",
           ("provider", "type")),
    Metric("habitbot_payments_refunded_total", "counter", "Refunds applied", ("provider",)),
    Metric("habitbot_payment_polls_total", "counter",
           "Open payments asked about by the poller, by outcome (credited, pending, canceled, "
           "already_final, mismatch, unknown, unavailable, error) and refunds it applied "
           "(refund_applied, refund_<outcome>, refunds_unavailable)", ("provider", "outcome")),
    Metric("habitbot_health_check_seconds", "histogram", "Duration of each /health check",
           ("check",)),
    Metric("habitbot_alerts_total", "counter",
           "Operator alerts by status: sent, logged, failed, suppressed (inside the cooldown: "
           "counted here, not stored)", ("status",)),
    Metric("habitbot_alert_records_dropped_total", "counter",
           "Alert records dropped because the waiting list (database down) was full"),
    Metric("habitbot_admin_logins_total", "counter",
           "/admin login attempts by outcome: ok, wrong_token, expired_form, "
           "limited_address, limited_global", ("outcome",)),
)}


def _escape(value: object) -> str:
    return str(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _series(name: str, labels: dict[str, object]) -> str:
    metric = METRICS.get(name.removesuffix("_bucket").removesuffix("_sum")
                         .removesuffix("_count"))
    if metric is None or set(labels) - {"le"} != set(metric.labels):
        raise ValueError(f"unknown metric or labels: {name} {sorted(labels)}")
    if not labels:
        return name
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return f"{name}{{{inner}}}"


def _failed(exc: Exception) -> None:
    global _warned_at
    if time.monotonic() - _warned_at > 60:
        _warned_at = time.monotonic()
        log.warning("metrics not written", extra={"error": type(exc).__name__})


# KEYS: the counters hash; ARGV: n, then n (field, integer) pairs, then (field, float) pairs.
# One command instead of a pipeline of one per field: less CPU in the caller (a web request
# flushes six fields) for the same single round trip.
_ADD = """
local n = tonumber(ARGV[1])
for i = 2, 2 * n, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 2 * n + 2, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
"""
_add_script: Script | None = None


def _add(conn: redis.Redis, ints: dict[str, int], floats: dict[str, float]) -> None:
    global _add_script
    if _add_script is None:
        _add_script = conn.register_script(_ADD)
    args: list[str | int | float] = [len(ints)]
    for field, amount in ints.items():
        args += (field, amount)
    for field, value in floats.items():
        args += (field, value)
    _add_script(keys=[COUNTERS_KEY], args=args, client=conn)


class Batch:
    """Metrics added up in memory and written in one round trip (`flush`, or on leaving a
    `with` block): for loops that would otherwise write once per item."""

    def __init__(self, conn: redis.Redis):
        self._redis = conn
        self._ints: dict[str, int] = {}
        self._floats: dict[str, float] = {}

    def incr(self, name: str, amount: int = 1, **labels: object) -> None:
        field = _series(name, labels)
        self._ints[field] = self._ints.get(field, 0) + amount

    def observe(self, name: str, seconds: float, **labels: object) -> None:
        """Three fields per observation: the one bucket it falls in (stored per bucket, made
        cumulative by `exposition`), the sum and the count."""
        index = bisect.bisect_left(BUCKETS, seconds)
        le = _bound(BUCKETS[index]) if index < len(BUCKETS) else "+Inf"
        for field in (_series(f"{name}_bucket", {**labels, "le": le}),
                      _series(f"{name}_count", labels)):
            self._ints[field] = self._ints.get(field, 0) + 1
        total = _series(f"{name}_sum", labels)
        self._floats[total] = self._floats.get(total, 0.0) + max(0.0, seconds)

    def flush(self) -> None:
        ints, floats = self._ints, self._floats
        self._ints, self._floats = {}, {}
        if not ints and not floats:
            return
        try:
            _add(self._redis, ints, floats)
        except redis.RedisError as exc:
            _failed(exc)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()


def _bound(bound: float) -> str:
    return repr(float(bound))


_current: ContextVar[Batch | None] = ContextVar("habitbot_metrics_batch", default=None)


@contextmanager
def collecting(conn: redis.Redis) -> Iterator[Batch]:
    """Within the block (one web request, one job), `incr` and `observe` add to one batch
    written in one round trip at the end, whoever calls them."""
    batch = Batch(conn)
    token = _current.set(batch)
    try:
        yield batch
    finally:
        _current.reset(token)
        batch.flush()


def incr(conn: redis.Redis, name: str, amount: int = 1, **labels: object) -> None:
    current = _current.get()
    if current is not None:
        current.incr(name, amount, **labels)
        return
    with Batch(conn) as batch:
        batch.incr(name, amount, **labels)


def observe(conn: redis.Redis, name: str, seconds: float, **labels: object) -> None:
    current = _current.get()
    if current is not None:
        current.observe(name, seconds, **labels)
        return
    with Batch(conn) as batch:
        batch.observe(name, seconds, **labels)


def stored(conn: redis.Redis) -> dict[str, float]:
    """Every stored sample: {'name{labels}': value}."""
    raw = conn.hgetall(COUNTERS_KEY)
    return {key.decode(): float(value) for key, value in raw.items()}  # type: ignore[union-attr]


def exposition(samples: dict[str, float], extra: Iterable[tuple[Metric, dict[str, float]]] = ()
               ) -> str:
    """Prometheus text format (version 0.0.4) of the stored samples plus `extra` families
    computed at scrape time (gauges), with HELP and TYPE lines for every known metric."""
    by_metric: dict[str, list[tuple[str, float]]] = {}
    for series, value in samples.items():
        name = series.split("{", 1)[0]
        family = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        if family not in METRICS:
            family = name
        by_metric.setdefault(family, []).append((series, value))
    lines: list[str] = []
    for metric, values in [*((METRICS[n], None) for n in sorted(METRICS)),
                           *((m, v) for m, v in extra)]:
        rows = sorted(by_metric.get(metric.name, [])) if values is None else sorted(
            values.items())
        if metric.kind == "histogram":
            rows = _all_buckets(metric.name, rows)
        lines.append(f"# HELP {metric.name} {metric.help}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        lines.extend(f"{series} {_number(value)}" for series, value in _ordered(rows))
    return "\n".join(lines) + "\n"


def _all_buckets(name: str, rows: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Stored buckets count the observations that fell in each; Prometheus wants every bucket
    of a series, cumulative, ending with +Inf = the count."""
    prefix = f"{name}_bucket{{"
    series: dict[str, dict[str, float]] = {}
    out = []
    for key, value in rows:
        if key.startswith(prefix) and 'le="' in key:
            head, _, tail = key.rpartition('le="')
            series.setdefault(head, {})[tail.split('"', 1)[0]] = value
        else:
            out.append((key, value))
    for head, counts in series.items():
        running = 0.0
        for le in [*(_bound(b) for b in BUCKETS), "+Inf"]:
            running += counts.get(le, 0.0)
            out.append((f'{head}le="{le}"}}', running))
    return out


def _ordered(rows: list[tuple[str, float]]) -> Iterator[tuple[str, float]]:
    """Buckets in ascending `le` order within a series (Prometheus requires it)."""
    def key(row: tuple[str, float]) -> tuple[str, float]:
        series = row[0]
        if '_bucket{' in series and 'le="' in series:
            head, _, tail = series.rpartition('le="')
            le = tail.split('"', 1)[0]
            return head, float("inf") if le == "+Inf" else float(le)
        return series, 0.0
    yield from sorted(rows, key=key)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def family(name: str, kind: str, help_text: str, values: Mapping[str, float]
           ) -> tuple[Metric, dict[str, float]]:
    """A family computed at scrape time (`exposition`'s extra); `values` maps a series
    (`labelled(...)`) to its value."""
    return Metric(name, kind, help_text), dict(values)


def labelled(name: str, **labels: object) -> str:
    """The series text of a gauge sample (labels escaped)."""
    if not labels:
        return name
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return f"{name}{{{inner}}}"
