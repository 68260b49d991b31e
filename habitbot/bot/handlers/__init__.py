"""Importing this package registers every handler with `habitbot.bot.registry`."""

from habitbot.bot.handlers import (  # noqa: F401
    common,
    habits,
    onboarding,
    premium,
    reminder,
    settings,
    stats,
    timezone,
    today,
    transfer,
)
