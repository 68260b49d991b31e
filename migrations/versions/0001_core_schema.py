"""Core schema: users, habits, schedules, check-ins, rest periods, reminder deliveries,
alerts and the job log.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admin_alerts",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(length=200), nullable=False),
        sa.Column(
            "severity",
            sa.Enum(
                "INFO",
                "WARNING",
                "CRITICAL",
                name="severity",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("component", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "sent",
                "suppressed",
                "failed",
                "logged",
                name="alert_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_alerts")),
    )
    op.create_index("ix_admin_alerts_created_at", "admin_alerts", ["created_at"], unique=False)
    op.create_index(
        "ix_admin_alerts_fingerprint_created",
        "admin_alerts",
        ["fingerprint", "created_at"],
        unique=False,
    )
    op.create_table(
        "job_execution_log",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("job_name", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "running",
                "success",
                "failed",
                "skipped",
                name="job_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("items", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_execution_log")),
    )
    op.create_index(
        "ix_job_execution_log_name_started",
        "job_execution_log",
        ["job_name", "started_at"],
        unique=False,
    )
    op.create_index(
        "ix_job_execution_log_started_at", "job_execution_log", ["started_at"], unique=False
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("first_name", sa.String(length=128), nullable=True),
        sa.Column(
            "language",
            sa.Enum(
                "ru", "en", name="language", native_enum=False, create_constraint=True, length=8
            ),
            server_default="ru",
            nullable=False,
        ),
        sa.Column("timezone", sa.String(length=64), server_default="Europe/Moscow", nullable=False),
        sa.Column("day_start_hour", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column(
            "notifications_enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False
        ),
        sa.Column(
            "weekly_summary_enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False
        ),
        sa.Column("weekly_summary_weekday", sa.SmallInteger(), server_default="6", nullable=False),
        sa.Column(
            "tier",
            sa.Enum(
                "free",
                "trial",
                "premium",
                name="tier",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="free",
            nullable=False,
        ),
        sa.Column("trial_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trial_ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("premium_ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_blocked", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("onboarded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "char_length(timezone) BETWEEN 1 AND 64", name=op.f("ck_users_timezone_length")
        ),
        sa.CheckConstraint(
            "day_start_hour BETWEEN 0 AND 23", name=op.f("ck_users_day_start_hour_range")
        ),
        sa.CheckConstraint(
            "weekly_summary_weekday BETWEEN 0 AND 6", name=op.f("ck_users_summary_weekday_range")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("telegram_id", name=op.f("uq_users_telegram_id")),
    )
    op.create_index(
        "ix_users_premium_ends_at",
        "users",
        ["premium_ends_at"],
        unique=False,
        postgresql_where=sa.text("premium_ends_at IS NOT NULL"),
    )
    op.create_index(
        "ix_users_trial_ends_at",
        "users",
        ["trial_ends_at"],
        unique=False,
        postgresql_where=sa.text("trial_ends_at IS NOT NULL"),
    )
    op.create_table(
        "habits",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "boolean",
                "measurable",
                name="habit_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="boolean",
            nullable=False,
        ),
        sa.Column("target_value", sa.Numeric(precision=12, scale=3), nullable=True),
        sa.Column("target_unit", sa.String(length=32), nullable=True),
        sa.Column(
            "target_direction",
            sa.Enum(
                "at_least",
                "at_most",
                name="target_direction",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="at_least",
            nullable=False,
        ),
        sa.Column(
            "frequency",
            sa.Enum(
                "daily",
                "weekdays",
                "times_per_week",
                name="frequency",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="daily",
            nullable=False,
        ),
        sa.Column("weekdays", sa.SmallInteger(), server_default="127", nullable=False),
        sa.Column("times_per_week", sa.SmallInteger(), server_default="7", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("position", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind = 'boolean' OR (target_value IS NOT NULL AND target_value > 0)",
            name=op.f("ck_habits_measurable_has_target"),
        ),
        sa.CheckConstraint(
            "char_length(name) BETWEEN 1 AND 100", name=op.f("ck_habits_name_length")
        ),
        sa.CheckConstraint(
            "times_per_week BETWEEN 1 AND 7", name=op.f("ck_habits_times_per_week_range")
        ),
        sa.CheckConstraint("weekdays BETWEEN 1 AND 127", name=op.f("ck_habits_weekdays_mask")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_habits_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_habits")),
    )
    op.create_index("ix_habits_user_active", "habits", ["user_id", "is_active"], unique=False)
    op.create_table(
        "habit_checkins",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("habit_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("local_date", sa.Date(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "done",
                "skipped",
                name="checkin_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("value", sa.Numeric(precision=12, scale=3), nullable=True),
        sa.Column(
            "source",
            sa.Enum(
                "reminder",
                "today",
                "text",
                "command",
                "import",
                name="checkin_source",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="command",
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "value IS NULL OR value >= 0", name=op.f("ck_habit_checkins_value_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["habit_id"],
            ["habits.id"],
            name=op.f("fk_habit_checkins_habit_id_habits"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_habit_checkins_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_habit_checkins")),
        sa.UniqueConstraint(
            "habit_id", "local_date", name=op.f("uq_habit_checkins_habit_id_local_date")
        ),
    )
    op.create_index(
        "ix_habit_checkins_user_date", "habit_checkins", ["user_id", "local_date"], unique=False
    )
    op.create_table(
        "habit_schedules",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("habit_id", sa.BigInteger(), nullable=False),
        sa.Column("local_time", sa.Time(), nullable=False),
        sa.Column("weekdays", sa.SmallInteger(), server_default="127", nullable=False),
        sa.Column("is_enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "weekdays BETWEEN 1 AND 127", name=op.f("ck_habit_schedules_weekdays_mask")
        ),
        sa.ForeignKeyConstraint(
            ["habit_id"],
            ["habits.id"],
            name=op.f("fk_habit_schedules_habit_id_habits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_habit_schedules")),
        sa.UniqueConstraint(
            "habit_id", "local_time", name=op.f("uq_habit_schedules_habit_id_local_time")
        ),
    )
    op.create_index(
        "ix_habit_schedules_due",
        "habit_schedules",
        ["next_fire_at"],
        unique=False,
        postgresql_where=sa.text("is_enabled AND next_fire_at IS NOT NULL"),
    )
    op.create_index(
        op.f("ix_habit_schedules_habit_id"), "habit_schedules", ["habit_id"], unique=False
    )
    op.create_table(
        "rest_periods",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("habit_id", sa.BigInteger(), nullable=True),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("ends_on >= starts_on", name=op.f("ck_rest_periods_dates_ordered")),
        sa.ForeignKeyConstraint(
            ["habit_id"],
            ["habits.id"],
            name=op.f("fk_rest_periods_habit_id_habits"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_rest_periods_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rest_periods")),
    )
    op.create_index(
        "ix_rest_periods_user_dates",
        "rest_periods",
        ["user_id", "starts_on", "ends_on"],
        unique=False,
    )
    op.create_table(
        "reminder_deliveries",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("schedule_id", sa.BigInteger(), nullable=False),
        sa.Column("habit_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("fire_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "sent",
                "failed",
                "skipped",
                "missed",
                name="delivery_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("attempts", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("telegram_message_id", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["habit_id"],
            ["habits.id"],
            name=op.f("fk_reminder_deliveries_habit_id_habits"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["habit_schedules.id"],
            name=op.f("fk_reminder_deliveries_schedule_id_habit_schedules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_reminder_deliveries_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminder_deliveries")),
        sa.UniqueConstraint(
            "schedule_id", "fire_at", name=op.f("uq_reminder_deliveries_schedule_id_fire_at")
        ),
    )
    op.create_index(
        "ix_reminder_deliveries_created_at", "reminder_deliveries", ["created_at"], unique=False
    )
    op.create_index(
        "ix_reminder_deliveries_pending_lease",
        "reminder_deliveries",
        ["lease_until"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        op.f("ix_reminder_deliveries_user_id"), "reminder_deliveries", ["user_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_reminder_deliveries_user_id"), table_name="reminder_deliveries")
    op.drop_index(
        "ix_reminder_deliveries_pending_lease",
        table_name="reminder_deliveries",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index("ix_reminder_deliveries_created_at", table_name="reminder_deliveries")
    op.drop_table("reminder_deliveries")
    op.drop_index("ix_rest_periods_user_dates", table_name="rest_periods")
    op.drop_table("rest_periods")
    op.drop_index(op.f("ix_habit_schedules_habit_id"), table_name="habit_schedules")
    op.drop_index(
        "ix_habit_schedules_due",
        table_name="habit_schedules",
        postgresql_where=sa.text("is_enabled AND next_fire_at IS NOT NULL"),
    )
    op.drop_table("habit_schedules")
    op.drop_index("ix_habit_checkins_user_date", table_name="habit_checkins")
    op.drop_table("habit_checkins")
    op.drop_index("ix_habits_user_active", table_name="habits")
    op.drop_table("habits")
    op.drop_index(
        "ix_users_trial_ends_at",
        table_name="users",
        postgresql_where=sa.text("trial_ends_at IS NOT NULL"),
    )
    op.drop_index(
        "ix_users_premium_ends_at",
        table_name="users",
        postgresql_where=sa.text("premium_ends_at IS NOT NULL"),
    )
    op.drop_table("users")
    op.drop_index("ix_job_execution_log_started_at", table_name="job_execution_log")
    op.drop_index("ix_job_execution_log_name_started", table_name="job_execution_log")
    op.drop_table("job_execution_log")
    op.drop_index("ix_admin_alerts_fingerprint_created", table_name="admin_alerts")
    op.drop_index("ix_admin_alerts_created_at", table_name="admin_alerts")
    op.drop_table("admin_alerts")
