"""Habits, their reminder schedules and check-ins."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Time,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from habitbot.models.base import Base, str_enum, utc_now_column

HABIT_KINDS = ("boolean", "measurable")
TARGET_DIRECTIONS = ("at_least", "at_most")
FREQUENCIES = ("daily", "weekdays", "times_per_week")
CHECKIN_STATUSES = ("done", "skipped")
CHECKIN_SOURCES = ("reminder", "today", "text", "command", "import")
ALL_WEEKDAYS = 0b1111111  # bit 0 = Monday … bit 6 = Sunday


class Habit(Base):
    __tablename__ = "habits"
    __table_args__ = (
        CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="name_length"),
        CheckConstraint("kind = 'boolean' OR (target_value IS NOT NULL AND target_value > 0)",
                        name="measurable_has_target"),
        CheckConstraint("weekdays BETWEEN 1 AND 127", name="weekdays_mask"),
        CheckConstraint("times_per_week BETWEEN 1 AND 7", name="times_per_week_range"),
        Index("ix_habits_user_active", "user_id", "is_active"),
        # Dashboard aggregates over a million users: new habits per day, habits active.
        Index("ix_habits_created_at", "created_at"),
        Index("ix_habits_active", "id", postgresql_where=text("is_active")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    kind: Mapped[str] = mapped_column(str_enum(*HABIT_KINDS, name="habit_kind", length=16),
                                      nullable=False, server_default="boolean")
    target_value: Mapped[Decimal | None] = mapped_column(Numeric(12, 3))
    target_unit: Mapped[str | None] = mapped_column(String(32))
    target_direction: Mapped[str] = mapped_column(
        str_enum(*TARGET_DIRECTIONS, name="target_direction", length=16), nullable=False,
        server_default="at_least")
    frequency: Mapped[str] = mapped_column(str_enum(*FREQUENCIES, name="frequency", length=16),
                                           nullable=False, server_default="daily")
    weekdays: Mapped[int] = mapped_column(SmallInteger, nullable=False,
                                          server_default=str(ALL_WEEKDAYS))
    times_per_week: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="7")
    # False while paused; archived habits are also inactive and have archived_at set.
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Since when the habit is paused (NULL while active); the days since are neutral.
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    position: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    created_at: Mapped[datetime] = utc_now_column()
    updated_at: Mapped[datetime] = utc_now_column(onupdate=True)


class HabitSchedule(Base):
    """One reminder time of a habit: wall-clock time in the owner's IANA zone plus weekdays.

    `next_fire_at` is the next instant in UTC, recomputed from the zone on every change, so a DST
    transition never shifts the wall-clock time.
    """

    __tablename__ = "habit_schedules"
    __table_args__ = (
        CheckConstraint("weekdays BETWEEN 1 AND 127", name="weekdays_mask"),
        UniqueConstraint("habit_id", "local_time"),
        # The reminder tick claims due rows through this index: O(due), not O(schedules).
        Index("ix_habit_schedules_due", "next_fire_at",
              postgresql_where=text("is_enabled AND next_fire_at IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    habit_id: Mapped[int] = mapped_column(ForeignKey("habits.id", ondelete="CASCADE"),
                                          nullable=False, index=True)
    local_time: Mapped[time] = mapped_column(Time(timezone=False), nullable=False)
    weekdays: Mapped[int] = mapped_column(SmallInteger, nullable=False,
                                          server_default=str(ALL_WEEKDAYS))
    is_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    next_fire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = utc_now_column()
    updated_at: Mapped[datetime] = utc_now_column(onupdate=True)


class HabitCheckin(Base):
    """One check-in per habit per local date (the user's day, after their day start hour)."""

    __tablename__ = "habit_checkins"
    __table_args__ = (
        UniqueConstraint("habit_id", "local_date"),
        CheckConstraint("value IS NULL OR value >= 0", name="value_non_negative"),
        Index("ix_habit_checkins_user_date", "user_id", "local_date"),
        Index("ix_habit_checkins_date_status", "local_date", "status"),  # check-ins per day
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    habit_id: Mapped[int] = mapped_column(ForeignKey("habits.id", ondelete="CASCADE"),
                                          nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         nullable=False)
    local_date: Mapped[date] = mapped_column(Date, nullable=False)
    status: Mapped[str] = mapped_column(str_enum(*CHECKIN_STATUSES, name="checkin_status",
                                                 length=16), nullable=False)
    value: Mapped[Decimal | None] = mapped_column(Numeric(12, 3))
    source: Mapped[str] = mapped_column(str_enum(*CHECKIN_SOURCES, name="checkin_source",
                                                 length=16), nullable=False,
                                        server_default="command")
    created_at: Mapped[datetime] = utc_now_column()
