"""Users: find or create the person behind an update, and their settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from habitbot.i18n import LANGUAGES, normalise_language
from habitbot.models import User
from habitbot.services.habits import recompute_user_schedules
from habitbot.services.timezones import is_valid_zone


class InvalidSetting(ValueError):
    """A settings value the user (or a forged button) sent that we refuse."""


@dataclass(frozen=True)
class UserContext:
    """What a handler needs to know about the user. `minimal` means: built in memory because
    the database or its schema is unavailable; nothing about the user can be stored."""

    id: int | None
    telegram_id: int
    language: str
    timezone: str
    tier: str
    onboarded: bool = True
    notifications_enabled: bool = True
    day_start_hour: int = 0
    summary_weekday: int | None = 6  # None: weekly summary off
    minimal: bool = False


_COLUMNS = (User.id, User.language, User.timezone, User.tier, User.onboarded_at,
            User.notifications_enabled, User.day_start_hour, User.weekly_summary_enabled,
            User.weekly_summary_weekday)


def _context(telegram_id: int, row) -> UserContext:
    return UserContext(row.id, telegram_id, row.language, row.timezone, row.tier,
                       onboarded=row.onboarded_at is not None,
                       notifications_enabled=row.notifications_enabled,
                       day_start_hour=row.day_start_hour,
                       summary_weekday=(row.weekly_summary_weekday
                                        if row.weekly_summary_enabled else None))


def minimal_user(telegram_id: int, language_code: str | None) -> UserContext:
    return UserContext(None, telegram_id, normalise_language(language_code), "UTC", "free",
                       minimal=True)


def touch_user(engine: Engine, telegram_id: int, username: str | None,
               first_name: str | None, language_code: str | None) -> UserContext:
    """Create the user on first contact; update last_seen and clear is_blocked on every one."""
    now = datetime.now(UTC)
    stmt = insert(User).values(
        telegram_id=telegram_id, username=(username or None) and username[:64],
        first_name=(first_name or None) and first_name[:128],
        language=normalise_language(language_code), last_seen_at=now,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[User.telegram_id],
        set_={"last_seen_at": now, "is_blocked": False, "blocked_at": None,
              "username": stmt.excluded.username, "first_name": stmt.excluded.first_name},
    ).returning(*_COLUMNS)
    with engine.begin() as conn:
        row = conn.execute(upsert).one()
    return _context(telegram_id, row)


def load_user(engine: Engine, telegram_id: int) -> UserContext | None:
    with engine.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(User.telegram_id == telegram_id)).first()
    return _context(telegram_id, row) if row else None


def _update(engine: Engine, telegram_id: int, **values: object) -> UserContext:
    with engine.begin() as conn:
        row = conn.execute(update(User).where(User.telegram_id == telegram_id)
                           .values(**values).returning(*_COLUMNS)).one()
    return _context(telegram_id, row)


def set_language(engine: Engine, telegram_id: int, language: str) -> UserContext:
    if language not in LANGUAGES:
        raise InvalidSetting(f"unknown language {language!r}")
    return _update(engine, telegram_id, language=language)


def set_timezone(engine: Engine, telegram_id: int, zone: str,
                 complete_onboarding: bool = False) -> UserContext:
    """Store an IANA zone (refused if it does not exist)."""
    if not is_valid_zone(zone):
        raise InvalidSetting(f"unknown timezone {zone!r}")
    values: dict[str, object] = {"timezone": zone}
    if complete_onboarding:
        values["onboarded_at"] = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        row = session.execute(update(User).where(User.telegram_id == telegram_id)
                              .values(**values).returning(*_COLUMNS)).one()
        # Same wall-clock times in the new zone: every reminder moves with the user.
        recompute_user_schedules(session, row.id)
    return _context(telegram_id, row)


def set_notifications(engine: Engine, telegram_id: int, enabled: bool) -> UserContext:
    return _update(engine, telegram_id, notifications_enabled=enabled)


def set_weekly_summary(engine: Engine, telegram_id: int, weekday: int | None) -> UserContext:
    """The weekday (0 = Monday) of the weekly summary, or None to turn it off."""
    if weekday is None:
        return _update(engine, telegram_id, weekly_summary_enabled=False)
    if not 0 <= weekday <= 6:
        raise InvalidSetting(f"weekday out of range: {weekday}")
    return _update(engine, telegram_id, weekly_summary_enabled=True,
                   weekly_summary_weekday=weekday)


def set_day_start_hour(engine: Engine, telegram_id: int, hour: int) -> UserContext:
    if not 0 <= hour <= 23:
        raise InvalidSetting(f"day start hour out of range: {hour}")
    return _update(engine, telegram_id, day_start_hour=hour)


def mark_blocked(engine: Engine, telegram_id: int) -> None:
    """Telegram said 403 for this chat: no reminders until the user writes again."""
    with engine.begin() as conn:
        conn.execute(update(User).where(User.telegram_id == telegram_id,
                                        User.is_blocked.is_(False))
                     .values(is_blocked=True, blocked_at=datetime.now(UTC)))
