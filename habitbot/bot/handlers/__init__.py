"""Importing this package registers every handler with `habitbot.bot.registry`."""

from habitbot.bot.handlers import (  # noqa: F401
    balance,
    common,
    habits,
    onboarding,
    premium,
    reminder,
    settings,
    stars,
    stats,
    timezone,
    today,
    transfer,
)
