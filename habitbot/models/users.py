"""Users and their rest periods."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from habitbot.models.base import Base, str_enum, utc_now_column

LANGUAGES = ("ru", "en")
TIERS = ("free", "trial", "premium")
# A mailbox has at most 254 characters (RFC 5321 path limit); the service validates the rest.
RECEIPT_EMAIL_MAX = 254
RECEIPT_EMAIL_SHAPE = "receipt_email IS NULL OR receipt_email LIKE '_%@_%'"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("day_start_hour BETWEEN 0 AND 23", name="day_start_hour_range"),
        CheckConstraint("weekly_summary_weekday BETWEEN 0 AND 6", name="summary_weekday_range"),
        CheckConstraint("char_length(timezone) BETWEEN 1 AND 64", name="timezone_length"),
        CheckConstraint(RECEIPT_EMAIL_SHAPE, name="receipt_email_shape"),
        Index("ix_users_premium_ends_at", "premium_ends_at",
              postgresql_where=text("premium_ends_at IS NOT NULL")),
        Index("ix_users_trial_ends_at", "trial_ends_at",
              postgresql_where=text("trial_ends_at IS NOT NULL")),
        Index("ix_users_summary_zone", "timezone", "weekly_summary_weekday",
              postgresql_where=text("weekly_summary_enabled AND NOT is_blocked")),
        Index("ix_users_last_seen_at", "last_seen_at"),  # active users
        Index("ix_users_blocked", "id", postgresql_where=text("is_blocked")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger, nullable=False, unique=True)
    username: Mapped[str | None] = mapped_column(String(64))
    first_name: Mapped[str | None] = mapped_column(String(128))
    language: Mapped[str] = mapped_column(str_enum(*LANGUAGES, name="language", length=8),
                                          nullable=False, server_default="ru")
    # An IANA zone name; validated by the service layer with zoneinfo before it is stored.
    timezone: Mapped[str] = mapped_column(String(64), nullable=False,
                                          server_default="Europe/Moscow")
    day_start_hour: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")
    notifications_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False,
                                                        server_default=text("true"))
    weekly_summary_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False,
                                                         server_default=text("true"))
    weekly_summary_weekday: Mapped[int] = mapped_column(SmallInteger, nullable=False,
                                                        server_default="6")
    # The local date the last weekly summary was sent for: claiming a week is one UPDATE.
    weekly_summary_sent_on: Mapped[date | None] = mapped_column(Date)
    tier: Mapped[str] = mapped_column(str_enum(*TIERS, name="tier", length=16), nullable=False,
                                      server_default="free")
    trial_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    trial_ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    premium_ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    is_blocked: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    blocked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    onboarded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Where 54-FZ receipts of YooKassa payments go (personal data: never logged).
    receipt_email: Mapped[str | None] = mapped_column(String(RECEIPT_EMAIL_MAX))
    created_at: Mapped[datetime] = utc_now_column()
    updated_at: Mapped[datetime] = utc_now_column(onupdate=True)


class RestPeriod(Base):
    """Days on which no reminders are sent and streaks are kept (all habits or one)."""

    __tablename__ = "rest_periods"
    __table_args__ = (
        CheckConstraint("ends_on >= starts_on", name="dates_ordered"),
        Index("ix_rest_periods_user_dates", "user_id", "starts_on", "ends_on"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         nullable=False)
    habit_id: Mapped[int | None] = mapped_column(ForeignKey("habits.id", ondelete="CASCADE"))
    starts_on: Mapped[date] = mapped_column(Date, nullable=False)
    ends_on: Mapped[date] = mapped_column(Date, nullable=False)
    created_at: Mapped[datetime] = utc_now_column()
