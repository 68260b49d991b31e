"""Read-only views for operators (the CLI): one user, and the state of the whole system.
No secrets and no message contents are shown."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from habitbot.models import Habit, Payment, ReminderDelivery, User
from habitbot.services import billing


@dataclass(frozen=True)
class UserReport:
    lines: list[str]


def user_report(engine: Engine, telegram_id: int) -> UserReport | None:
    with Session(engine) as session:
        user = session.execute(select(User).where(User.telegram_id == telegram_id)
                               ).scalars().first()
        if user is None:
            return None
        habits = session.execute(select(Habit.name, Habit.is_active, Habit.archived_at)
                                 .where(Habit.user_id == user.id)
                                 .order_by(Habit.position)).all()
        deliveries = session.execute(
            select(ReminderDelivery.fire_at, ReminderDelivery.status, ReminderDelivery.error)
            .where(ReminderDelivery.user_id == user.id)
            .order_by(ReminderDelivery.id.desc()).limit(5)).all()
    state = billing.status(engine, user.id)
    seen = f"{user.last_seen_at:%Y-%m-%d %H:%M} UTC" if user.last_seen_at else "never"
    until = f" until {state.ends_at:%Y-%m-%d}" if state.ends_at else ""
    lines = [
        f"user {telegram_id} (internal id {user.id}), created {user.created_at:%Y-%m-%d}",
        f"language {user.language}, timezone {user.timezone}, "
        f"day starts {user.day_start_hour:02d}:00",
        f"reminders {'on' if user.notifications_enabled else 'off'}, "
        f"blocked the bot: {'yes' if user.is_blocked else 'no'}, last seen {seen}",
        f"plan {state.tier}{until}, balance {billing.balance(engine, user.id) / 100:.2f} RUB",
        f"habits ({len(habits)}):",
    ]
    for name, active, archived in habits:
        flag = "archived" if archived else ("active" if active else "paused")
        lines.append(f"  - {name} [{flag}]")
    lines.append("last deliveries:")
    for fire_at, status, error in deliveries:
        lines.append(f"  - {fire_at:%Y-%m-%d %H:%M} UTC {status}" + (f" ({error})" if error
                                                                    else ""))
    return UserReport(lines)


def system_counts(engine: Engine, now: datetime | None = None) -> dict[str, int]:
    now = now or datetime.now(UTC)
    day_ago = now - timedelta(days=1)
    with Session(engine) as session:
        def count(query) -> int:  # type: ignore[no-untyped-def]
            return int(session.execute(query).scalar_one())

        return {
            "users": count(select(func.count()).select_from(User)),
            "users active in 24 h": count(select(func.count()).select_from(User)
                                          .where(User.last_seen_at >= day_ago)),
            "users premium": count(select(func.count()).select_from(User)
                                   .where(User.premium_ends_at > now)),
            "users on trial": count(select(func.count()).select_from(User)
                                    .where(User.trial_started_at <= now,
                                           User.trial_ends_at > now)),
            "users blocked": count(select(func.count()).select_from(User)
                                   .where(User.is_blocked)),
            "habits active": count(select(func.count()).select_from(Habit)
                                   .where(Habit.is_active)),
            "reminders sent in 24 h": count(
                select(func.count()).select_from(ReminderDelivery)
                .where(ReminderDelivery.status == "sent",
                       ReminderDelivery.created_at >= day_ago)),
            "reminders failed or missed in 24 h": count(
                select(func.count()).select_from(ReminderDelivery)
                .where(ReminderDelivery.status.in_(("failed", "missed")),
                       ReminderDelivery.created_at >= day_ago)),
            "reminders pending": count(select(func.count()).select_from(ReminderDelivery)
                                       .where(ReminderDelivery.status == "pending")),
            "payments pending": count(select(func.count()).select_from(Payment)
                                      .where(Payment.status.in_(billing.OPEN_STATUSES))),
        }
