"""The dashboard pages: thin views over `habitbot.services.dashboard`, `operator` and the queue
tools of `workers.admin` (the same ones the CLI uses).

A dependency that is down does not take a page down: the sections that need it say so and the
others still render.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis
from flask import current_app, flash, g, redirect, render_template, request, url_for
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from habitbot.runtime import Runtime
from habitbot.services import dashboard
from habitbot.services.operator import user_report
from webhooks.admin.auth import refuse
from webhooks.admin.blueprint import bp, client_ip
from workers import admin as jobs

log = logging.getLogger(__name__)

T = TypeVar("T")
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
TELEGRAM_ID_RE = re.compile(r"^[0-9]{1,19}$")
FAILED_JOBS_SHOWN = 100
PROCESS_CHECKS = ("bot", "scheduler", "workers", "database", "redis", "schema")
# The overview and the payments page reload themselves this often: what happens shows up
# within seconds. Both read through indexes and short caches, so a reload is cheap.
LIVE_REFRESH = 10


def _runtime() -> Runtime:
    return current_app.extensions["habitbot"]  # type: ignore[no-any-return]


def _attempt(what: str, load: Callable[[], T]) -> T | None:
    """The section's data, or None with a notice when its database or Redis is down."""
    try:
        return load()
    except (SQLAlchemyError, redis.RedisError) as exc:
        log.warning("admin: section unavailable",
                    extra={"section": what, "error": type(exc).__name__})
        g.setdefault("unavailable", []).append(f"{what}: {type(exc).__name__}")
        return None


def _health() -> tuple[str, dict[str, dict[str, Any]]]:
    if "health" not in g:
        g.health = current_app.extensions["health"].run()
    return g.health  # type: ignore[no-any-return]


def _degraded_reason(checks: dict[str, dict[str, Any]]) -> str | None:
    """Why the processes are in DEGRADED mode (schema and code disagree), if they are."""
    guard = _runtime().guard
    if guard.degraded:
        return guard.reason
    schema = checks.get("schema", {})
    if not schema.get("ok", True):
        return str(schema.get("error") or "the schema does not match the code")
    return None


@bp.context_processor
def _page_state() -> dict[str, Any]:
    if request.endpoint in ("admin.login", "admin.static") or "csrf_token" not in g:
        return {}
    status, checks = _health()
    failing = {name: str(c.get("error") or "failing") for name, c in checks.items()
               if not c["ok"] and name != "schema"}
    return {"health_status": status, "degraded_reason": _degraded_reason(checks),
            "failing_checks": failing, "unavailable": g.get("unavailable", []),
            "now": datetime.now(UTC)}


@bp.app_template_filter("admin_money")
def money(amount_minor: int, currency: str) -> str:
    """Minor units for display: kopecks and cents have two decimals, stars none."""
    if currency == "XTR":
        return f"{amount_minor:,} XTR"
    return f"{amount_minor / 100:,.2f} {currency}"


def _chart(kind: str, data: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"type": kind, "data": data, **options}


@bp.get("/")
def overview() -> str:
    runtime = _runtime()
    status, checks = _health()
    processes = {name: checks[name] for name in PROCESS_CHECKS if name in checks}
    figures = _attempt("figures", lambda: dashboard.figures(runtime.engine, runtime.redis))
    sender = _attempt("send rate", lambda: dashboard.sender_activity(
        runtime.redis, runtime.settings.telegram_global_rate))
    alerts = _attempt("alerts", lambda: dashboard.recent_alerts(runtime.engine))
    charts = {}
    if sender is not None:
        charts["send-rate"] = _chart("line", sender.series.chart(), dashed=["limit"],
                                     bars=["429s"], secondary=["429s"])
    return render_template("admin/overview.html", status=status, processes=processes,
                           figures=figures, sender=sender, alerts=alerts, charts=charts,
                           refresh=LIVE_REFRESH)


@bp.get("/activity")
def activity() -> str:
    runtime = _runtime()
    now = datetime.now(UTC)
    daily = _attempt("habits and check-ins", lambda: dashboard.daily_activity(
        runtime.engine, runtime.redis, now.date()))
    hourly = _attempt("reminders", lambda: dashboard.reminders_hourly(
        runtime.engine, runtime.redis, now))
    charts = {}
    if daily is not None:
        charts["daily"] = _chart("bar", daily.chart(), line=["new habits"])
    if hourly is not None:
        charts["hourly"] = _chart("bar", hourly.chart(), stacked=True)
    return render_template("admin/activity.html", daily=daily, hourly=hourly, charts=charts,
                           refresh=30)


@bp.get("/payments")
def payments() -> str:
    runtime = _runtime()
    overview = _attempt("payments", lambda: dashboard.payments_overview(
        runtime.engine, datetime.now(UTC)))
    charts = {}
    if overview is not None:
        charts["payments"] = _chart("bar", overview.chart(), stacked=True)
    return render_template("admin/payments.html", payments=overview, charts=charts,
                           too_long=int(dashboard.PENDING_TOO_LONG.total_seconds() // 60),
                           refresh=LIVE_REFRESH)


@bp.get("/jobs")
def jobs_page() -> str:
    runtime = _runtime()
    queues = _attempt("queues", lambda: jobs.counts(runtime.redis))
    periodic = _attempt("periodic jobs", lambda: jobs.periodic(runtime.redis))
    failed = _attempt("failed jobs", lambda: jobs.failed(runtime.redis, limit=100))
    runs = _attempt("job runs", lambda: dashboard.recent_job_runs(runtime.engine))
    charts = {}
    if queues is not None:
        charts["queues"] = _chart("bar", dashboard.Series(
            [q.name for q in queues],
            {"queued": [q.queued for q in queues], "running": [q.started for q in queues],
             "failed": [q.failed for q in queues]}).chart())
    return render_template("admin/jobs.html", queues=queues, periodic=periodic,
                           failed=failed[:FAILED_JOBS_SHOWN] if failed is not None else None,
                           failed_total=len(failed or ()), runs=runs, charts=charts)


@bp.post("/jobs/requeue")
def requeue() -> Response:
    everything = request.form.get("all") == "1"
    job_id = request.form.get("job_id", "")
    if not everything and not JOB_ID_RE.match(job_id):
        return refuse(400, "job_id must be 1-128 letters, digits or _ . : - characters.")
    try:
        done = jobs.requeue(_runtime().redis, None if everything else job_id)
    except redis.RedisError:
        return refuse(503, "Redis is unavailable: nothing was requeued.")
    if not done:
        return refuse(404, "No such failed job: nothing was requeued." if not everything
                      else "There are no failed jobs.")
    log.info("admin: jobs requeued", extra={"job_ids": done, "client_ip": client_ip()})
    flash(f"Requeued {len(done)} job(s): {', '.join(done)}")
    return redirect(url_for("admin.jobs_page"))


@bp.get("/users")
def users() -> Response | str:
    raw = request.args.get("telegram_id", "").strip()
    if not raw:
        return render_template("admin/user.html", report=None, telegram_id="")
    if not TELEGRAM_ID_RE.match(raw) or not 0 < int(raw) < 2**63:
        return refuse(400, "telegram_id must be a positive whole number (a Telegram user id).")
    telegram_id = int(raw)
    report = _attempt("user", lambda: user_report(_runtime().engine, telegram_id))
    if report is None and not g.get("unavailable"):
        return refuse(404, f"No user with Telegram id {telegram_id}.")
    return render_template("admin/user.html", report=report, telegram_id=telegram_id)
