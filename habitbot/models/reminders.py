"""Reminder deliveries: one row per (schedule, fire time) makes sending idempotent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    SmallInteger,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from habitbot.models.base import Base, str_enum, utc_now_column

DELIVERY_STATUSES = ("pending", "sent", "failed", "skipped", "missed")


class ReminderDelivery(Base):
    __tablename__ = "reminder_deliveries"
    __table_args__ = (
        UniqueConstraint("schedule_id", "fire_at"),
        # The reaper finds deliveries whose lease ran out without scanning sent rows.
        Index("ix_reminder_deliveries_pending_lease", "lease_until",
              postgresql_where=text("status = 'pending'")),
        # Retention cleanup by age, and the dashboard's outcomes per hour (index only).
        Index("ix_reminder_deliveries_created_status", "created_at", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(
        ForeignKey("habit_schedules.id", ondelete="CASCADE"), nullable=False)
    habit_id: Mapped[int] = mapped_column(ForeignKey("habits.id", ondelete="CASCADE"),
                                          nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         nullable=False, index=True)
    fire_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    status: Mapped[str] = mapped_column(
        str_enum(*DELIVERY_STATUSES, name="delivery_status", length=16), nullable=False,
        server_default="pending")
    attempts: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = utc_now_column()
