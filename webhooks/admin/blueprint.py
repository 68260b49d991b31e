"""The `/admin` blueprint and what it sets on the app: the session cookie and security headers.

The session cookie is signed with a random secret that has nothing to do with ADMIN_TOKEN, so a
cookie (even the one every visitor of the login page gets) tells nothing about the token:
SECRET_KEY when it is set, else one generated on the first start and kept in Redis (`SET NX`:
the first worker to start wins, every gunicorn worker and every restart reads the same one).
Redis already holds the sessions themselves, so the secret lives and dies with them: losing
Redis logs everyone out and nothing else. Each session carries a fingerprint of the token keyed
with that secret (`token_fingerprint`), checked on every request: changing ADMIN_TOKEN logs
everyone out.

The session cookie is HttpOnly, SameSite=Strict, limited to `/admin`, expires after
`SESSION_LIFETIME`, and is Secure whenever the request came over TLS (directly, or to the
trusted proxy: see `webhooks.proxies`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from datetime import timedelta
from typing import cast

import redis
from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    current_app,
    has_request_context,
    request,
)
from flask.blueprints import BlueprintSetupState
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from itsdangerous import URLSafeTimedSerializer

from habitbot.config import Settings
from habitbot.redis_client import KEY_PREFIX
from webhooks import proxies

SESSION_LIFETIME = timedelta(hours=8)
COOKIE_NAME = "habitbot_admin"
SECRET_REDIS_KEY = f"{KEY_PREFIX}admin:session_secret"
# How long a worker trusts its copy of the generated secret before reading Redis again (and
# putting its copy back if Redis lost it), so all workers agree again soon after a flush.
SECRET_RECHECK_SECONDS = 60
_FINGERPRINT_LABEL = b"habitbot /admin token fingerprint v2\0"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates",
               static_folder="static", static_url_path="/static")


def settings() -> Settings:
    return current_app.extensions["habitbot"].settings  # type: ignore[no-any-return]


class SessionSecret:
    """The key that signs session cookies: SECRET_KEY, or the one generated and kept in Redis."""

    def __init__(self, configured: str | None, redis_conn: redis.Redis):
        self._configured = configured
        self._redis = redis_conn
        self._cached: str | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    def current(self) -> str:
        """The secret; raises redis.RedisError when it is generated and Redis cannot be read."""
        if self._configured is not None:
            return self._configured
        with self._lock:
            if self._cached is not None and \
                    time.monotonic() - self._checked_at < SECRET_RECHECK_SECONDS:
                return self._cached
            candidate = self._cached or secrets.token_urlsafe(48)
            pipe = self._redis.pipeline()
            pipe.set(SECRET_REDIS_KEY, candidate, nx=True)
            pipe.get(SECRET_REDIS_KEY)
            _, stored = pipe.execute()
            self._cached = stored.decode() if isinstance(stored, bytes) else candidate
            self._checked_at = time.monotonic()
            return self._cached


def session_secret() -> SessionSecret:
    return current_app.extensions["admin_secret"]  # type: ignore[no-any-return]


def token_fingerprint(secret: str, admin_token: str) -> str:
    """Identifies the ADMIN_TOKEN a session logged in with; useless without the secret."""
    return hmac.new(secret.encode(), _FINGERPRINT_LABEL + admin_token.encode(),
                    hashlib.sha256).hexdigest()


def client_ip() -> str:
    """The client's address for rate limits and logs ("unknown" when it cannot be told)."""
    address = proxies.request_ip(settings().trusted_proxies)
    return str(address) if address is not None else "unknown"


def came_over_tls() -> bool:
    return proxies.came_over_tls(settings().trusted_proxies)


class AdminSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, signed with `SessionSecret` (read only for requests that
    carry the cookie or get one: the webhooks never touch it), Secure exactly when the request
    came over TLS. Without Redis (and without SECRET_KEY) no cookie is read or set; the admin
    guard answers 503."""

    def __init__(self, secret: SessionSecret):
        self._secret = secret

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        return URLSafeTimedSerializer(
            self._secret.current(), salt=self.salt, serializer=self.serializer,
            signer_kwargs={"key_derivation": self.key_derivation,
                           "digest_method": self.digest_method})

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        try:
            return super().open_session(app, request)
        except redis.RedisError:
            return self.session_class()

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        try:
            super().save_session(app, session, response)
        except redis.RedisError:
            pass  # the page already said the session store is unavailable

    def get_cookie_secure(self, app: Flask) -> bool:
        if bool(app.config["SESSION_COOKIE_SECURE"]):
            return True
        return has_request_context() and came_over_tls()


@bp.record_once
def _configure(state: BlueprintSetupState) -> None:
    app = cast(Flask, state.app)
    runtime = app.extensions["habitbot"]
    if runtime.settings.admin_token is None:
        return  # /admin answers 404: no key, no session
    secret = SessionSecret(runtime.settings.secret_key, runtime.redis)
    app.extensions["admin_secret"] = secret
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_PATH="/admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    app.session_interface = AdminSessionInterface(secret)


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "admin.static":
        response.headers["Cache-Control"] = "no-store"
    return response
