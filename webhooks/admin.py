"""`/admin`: the operator dashboard, behind ADMIN_TOKEN."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")
