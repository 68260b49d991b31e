"""What a payment is, written into the provider's record when the payment is created.

YooKassa keeps it in `metadata`, Crypto Pay in the invoice's `payload`. It lets us

- recognise our row without trusting our numeric id alone: ids restart from the backup's
  sequence after a database restore, so a later payment of another user can reuse the id a
  lost payment carries at the provider; the idempotence key (a random UUID) never repeats;
- rebuild a row a restore lost (whose user, a top-up or which plan) and credit it through
  the same exactly-once path.

Records written before the key was carried (only the payment id) are still read.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

PAYMENT_TYPES = ("balance_topup", "subscription")
PLANS = ("month", "year")
_MAX_ID_DIGITS = 18


def _small_int(value: Any) -> int | None:
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    return int(text) if text.isdigit() and len(text) <= _MAX_ID_DIGITS else None


def _key(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Origin:
    payment_id: int | None
    key: uuid.UUID | None = None
    telegram_id: int | None = None
    payment_type: str | None = None
    plan: str | None = None

    @property
    def restorable(self) -> bool:
        """Enough to rebuild a lost row: whose payment, what for, with which key."""
        if self.key is None or self.telegram_id is None:
            return False
        if self.payment_type == "balance_topup":
            return self.plan is None
        return self.payment_type == "subscription" and self.plan in PLANS

    def fields(self) -> dict[str, str]:
        """YooKassa metadata (string values, at most 16 keys)."""
        out = {"payment_id": str(self.payment_id)}
        if self.key is not None:
            out["key"] = str(self.key)
        if self.telegram_id is not None:
            out["telegram_id"] = str(self.telegram_id)
        if self.payment_type is not None:
            out["type"] = self.payment_type
        if self.plan is not None:
            out["plan"] = self.plan
        return out

    def payload(self) -> str:
        """A Crypto Pay invoice payload (up to 4 KB; ours is about 150 bytes)."""
        return json.dumps(self.fields(), separators=(",", ":"), sort_keys=True)


def from_fields(data: Any) -> Origin:
    """From YooKassa metadata (or a decoded payload); unreadable fields become None."""
    if not isinstance(data, dict):
        return Origin(None)
    payment_type = data.get("type") if data.get("type") in PAYMENT_TYPES else None
    plan = data.get("plan") if data.get("plan") in PLANS else None
    return Origin(_small_int(data.get("payment_id")), _key(data.get("key")),
                  _small_int(data.get("telegram_id")), payment_type, plan)


def from_payload(payload: str | None) -> Origin:
    """From a Crypto Pay payload: our JSON, or the bare payment id of older invoices."""
    text = (payload or "").strip()
    if text.startswith("{"):
        try:
            return from_fields(json.loads(text))
        except ValueError:
            return Origin(None)
    return Origin(_small_int(text))
