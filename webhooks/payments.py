"""Provider notifications: `POST /webhooks/yookassa` and `POST /webhooks/cryptobot`."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("payments", __name__)
