"""Compact, versioned, signed callback data (Telegram allows 1–64 bytes).

Format: `1|<action>|<arg>|…|<sig>` where `sig` is 8 characters of an HMAC over the pressing
user's id and the payload, keyed by a secret derived from the bot token. A button sent to one
user cannot be replayed by another, and a tampered or truncated payload is refused — the
handler then answers "this button is no longer valid" and changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

VERSION = "1"
SEP = "|"
MAX_BYTES = 64
SIG_LEN = 8


class InvalidCallback(ValueError):
    pass


@dataclass(frozen=True)
class Callback:
    action: str
    args: tuple[str, ...]


class CallbackCodec:
    def __init__(self, bot_token: str):
        self._key = hashlib.sha256(b"habitbot-callbacks|" + bot_token.encode()).digest()

    def _sign(self, user_id: int, payload: str) -> str:
        digest = hmac.new(self._key, f"{user_id}{SEP}{payload}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).decode()[:SIG_LEN]

    def encode(self, user_id: int, action: str, *args: object) -> str:
        parts = [VERSION, action, *(str(a) for a in args)]
        if any(SEP in p for p in parts):
            raise ValueError("callback parts must not contain the separator")
        payload = SEP.join(parts)
        data = f"{payload}{SEP}{self._sign(user_id, payload)}"
        if len(data.encode()) > MAX_BYTES:
            raise ValueError(f"callback data over {MAX_BYTES} bytes: {action}")
        return data

    def decode(self, user_id: int, data: str | None) -> Callback:
        if not data or len(data.encode()) > MAX_BYTES:
            raise InvalidCallback("empty or oversized")
        payload, _, sig = data.rpartition(SEP)
        parts = payload.split(SEP)
        if len(parts) < 2 or parts[0] != VERSION:
            raise InvalidCallback("unknown version")
        if not hmac.compare_digest(sig, self._sign(user_id, payload)):
            raise InvalidCallback("bad signature")
        return Callback(parts[1], tuple(parts[2:]))
