"""The `/admin` blueprint and what it sets on the app: the session cookie and security headers.

Flask's secret key is derived from ADMIN_TOKEN with HMAC, so every gunicorn worker and every
restart signs and reads the same cookies, and changing the token logs everyone out. The session
cookie is HttpOnly, SameSite=Strict, limited to `/admin`, expires after `SESSION_LIFETIME`, and is
Secure whenever the request came over TLS (directly, or to the trusted proxy: see
`webhooks.proxies`).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import cast

from flask import Blueprint, Flask, Response, current_app, has_request_context, request
from flask.blueprints import BlueprintSetupState
from flask.sessions import SecureCookieSessionInterface

from habitbot.config import Settings
from webhooks import proxies

SESSION_LIFETIME = timedelta(hours=8)
COOKIE_NAME = "habitbot_admin"
_KEY_LABEL = b"habitbot /admin session signing key v1"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates",
               static_folder="static", static_url_path="/static")


def settings() -> Settings:
    return current_app.extensions["habitbot"].settings  # type: ignore[no-any-return]


def secret_key(admin_token: str) -> str:
    return hmac.new(admin_token.encode(), _KEY_LABEL, hashlib.sha256).hexdigest()


def client_ip() -> str:
    """The client's address for rate limits and logs ("unknown" when it cannot be told)."""
    address = proxies.request_ip(settings().trusted_proxies)
    return str(address) if address is not None else "unknown"


def came_over_tls() -> bool:
    return proxies.came_over_tls(settings().trusted_proxies)


class AdminSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, Secure exactly when the request came over TLS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        if bool(app.config["SESSION_COOKIE_SECURE"]):
            return True
        return has_request_context() and came_over_tls()


@bp.record_once
def _configure(state: BlueprintSetupState) -> None:
    app = cast(Flask, state.app)
    token = app.extensions["habitbot"].settings.admin_token
    if token is None:
        return  # /admin answers 404: no key, no session
    app.secret_key = secret_key(token)
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_PATH="/admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    app.session_interface = AdminSessionInterface()


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "admin.static":
        response.headers["Cache-Control"] = "no-store"
    return response
