"""Per-update context: the user (or a minimal in-memory one) and their translator."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from habitbot.i18n import Translator
from habitbot.runtime import Runtime
from habitbot.services.users import UserContext, minimal_user, touch_user

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    user: UserContext
    t: Translator

    @property
    def limited(self) -> bool:
        return self.user.minimal


def resolve(runtime: Runtime, tg_user) -> Context:
    """Load or create the user; in DEGRADED mode or with the database down, keep answering
    with a minimal user built from the update alone."""
    user: UserContext | None = None
    if not runtime.guard.degraded:
        try:
            user = touch_user(runtime.engine, tg_user.id, tg_user.username, tg_user.first_name,
                              tg_user.language_code)
            runtime.sender.unblock(tg_user.id)
        except SQLAlchemyError as exc:
            log.warning("user store unavailable, using a minimal user",
                        extra={"user_id": tg_user.id, "error": type(exc).__name__})
    if user is None:
        user = minimal_user(tg_user.id, tg_user.language_code)
    return Context(user, Translator(user.language))
