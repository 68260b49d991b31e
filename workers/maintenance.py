"""Maintenance jobs: retention of operational tables (the bot's record of taken updates
included), alerts recorded late."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete

from habitbot.models import AdminAlert, JobExecutionLog, ReminderDelivery
from habitbot.runtime import Runtime
from habitbot.services import updates
from workers.periodic import run_periodic

JOB_LOG_RETENTION = timedelta(days=30)
ALERT_RETENTION = timedelta(days=180)
DELIVERY_RETENTION = timedelta(days=90)


def _cleanup(runtime: Runtime) -> int:
    now = datetime.now(UTC)
    with runtime.engine.begin() as conn:
        jobs = conn.execute(delete(JobExecutionLog).where(
            JobExecutionLog.started_at < now - JOB_LOG_RETENTION)).rowcount
        alerts = conn.execute(delete(AdminAlert).where(
            AdminAlert.created_at < now - ALERT_RETENTION)).rowcount
        deliveries = conn.execute(delete(ReminderDelivery).where(
            ReminderDelivery.created_at < now - DELIVERY_RETENTION)).rowcount
        processed = updates.prune(conn, now)
    return int(jobs or 0) + int(alerts or 0) + int(deliveries or 0) + processed


def cleanup() -> int:
    return run_periodic("cleanup", _cleanup)


def flush_alerts() -> int:
    return run_periodic("flush_alerts", lambda runtime: runtime.alerts.flush_pending())

