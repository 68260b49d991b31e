"""Bot API error mapping: what a failed call means for the caller."""

from __future__ import annotations


class TelegramError(Exception):
    """A Bot API call failed. `permanent` errors must not be retried."""

    def __init__(self, method: str, code: int, description: str,
                 retry_after: float | None = None):
        super().__init__(f"{method}: {code} {description}")
        self.method = method
        self.code = code
        self.description = description
        self.retry_after = retry_after

    @property
    def blocked(self) -> bool:
        """The user blocked the bot, deleted their account or the chat is gone for good."""
        return self.code == 403

    @property
    def unauthorized(self) -> bool:
        return self.code == 401

    @property
    def rate_limited(self) -> bool:
        return self.code == 429

    @property
    def transient(self) -> bool:
        """Worth retrying later: 429, 5xx and network failures (code 0)."""
        return self.code == 429 or self.code >= 500 or self.code == 0

    @property
    def unreachable(self) -> bool:
        """Telegram could not be reached or failed on its side (network, timeout, 5xx): the
        call itself was fine and may succeed later unchanged."""
        return self.code == 0 or self.code >= 500

    @property
    def permanent(self) -> bool:
        return not self.transient


class TelegramNetworkError(TelegramError):
    """No HTTP answer at all: connection refused or reset, or a timeout."""

    def __init__(self, method: str, description: str):
        super().__init__(method, 0, description)
