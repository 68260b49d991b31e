"""Operational records: alerts, periodic job runs and the updates the bot has taken."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from habitbot.models.base import Base, str_enum, utc_now_column

SEVERITIES = ("INFO", "WARNING", "CRITICAL")
ALERT_STATUSES = ("sent", "suppressed", "failed", "logged")
JOB_STATUSES = ("running", "success", "failed", "skipped")
UPDATE_STATUSES = ("handling", "handled")


class AdminAlert(Base):
    __tablename__ = "admin_alerts"
    __table_args__ = (
        Index("ix_admin_alerts_fingerprint_created", "fingerprint", "created_at"),
        Index("ix_admin_alerts_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(200), nullable=False)
    severity: Mapped[str] = mapped_column(str_enum(*SEVERITIES, name="severity", length=16),
                                          nullable=False)
    component: Mapped[str] = mapped_column(String(64), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    # sent: delivered to ALERT_CHAT_ID; suppressed: inside the cooldown; failed: delivery
    # failed; logged: no ALERT_CHAT_ID configured.
    status: Mapped[str] = mapped_column(str_enum(*ALERT_STATUSES, name="alert_status",
                                                 length=16), nullable=False)
    # When the alert was raised; may be earlier than created_at if the database was down.
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = utc_now_column()


class JobExecutionLog(Base):
    __tablename__ = "job_execution_log"
    __table_args__ = (
        Index("ix_job_execution_log_name_started", "job_name", "started_at"),
        Index("ix_job_execution_log_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_name: Mapped[str] = mapped_column(String(64), nullable=False)
    job_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(str_enum(*JOB_STATUSES, name="job_status", length=16),
                                        nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    items: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = utc_now_column()


class ProcessedUpdate(Base):
    """A Telegram update the bot has taken: claimed (`handling`) before its handler runs,
    `handled` after. Telegram delivers an update again until a getUpdates confirms it; this
    record is what keeps the second delivery from running the handler again
    (`services.updates`). Kept 7 days (Telegram keeps an unconfirmed update for 24 h)."""

    __tablename__ = "processed_updates"
    __table_args__ = (Index("ix_processed_updates_claimed_at", "claimed_at"),)

    # Update ids are per bot: a new BOT_TOKEN of another bot starts its own sequence.
    bot_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(str_enum(*UPDATE_STATUSES, name="update_status",
                                                 length=16), nullable=False)
    claimed_at: Mapped[datetime] = utc_now_column()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
