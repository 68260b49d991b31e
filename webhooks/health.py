"""GET /health: JSON status of every dependency, 503 when the process cannot serve users."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    status, checks = current_app.extensions["health"].run()
    response = jsonify({"status": status, "checks": checks})
    response.status_code = 503 if status == "fail" else 200
    response.headers["Cache-Control"] = "no-store"
    return response
