"""Importing this package registers every handler with `habitbot.bot.registry`."""

from habitbot.bot.handlers import common, onboarding, settings, timezone  # noqa: F401
