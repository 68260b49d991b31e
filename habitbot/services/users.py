"""Users: find or create the person behind an update."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects.postgresql import insert

from habitbot.i18n import normalise_language
from habitbot.models import User


@dataclass(frozen=True)
class UserContext:
    """What a handler needs to know about the user. `minimal` means: built in memory because
    the database or its schema is unavailable; nothing about the user can be stored."""

    id: int | None
    telegram_id: int
    language: str
    timezone: str
    tier: str
    minimal: bool = False


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
    stmt = stmt.on_conflict_do_update(
        index_elements=[User.telegram_id],
        set_={"last_seen_at": now, "is_blocked": False, "blocked_at": None,
              "username": stmt.excluded.username, "first_name": stmt.excluded.first_name},
    )
    with engine.begin() as conn:
        conn.execute(stmt)
        row = conn.execute(
            select(User.id, User.language, User.timezone, User.tier)
            .where(User.telegram_id == telegram_id)
        ).one()
    return UserContext(row.id, telegram_id, row.language, row.timezone, row.tier)


def mark_blocked(engine: Engine, telegram_id: int) -> None:
    """Telegram said 403 for this chat: no reminders until the user writes again."""
    with engine.begin() as conn:
        conn.execute(update(User).where(User.telegram_id == telegram_id,
                                        User.is_blocked.is_(False))
                     .values(is_blocked=True, blocked_at=datetime.now(UTC)))
