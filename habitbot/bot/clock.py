"""The bot's clock: every handler reads "now" here, so a test can set the time of a press."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
