"""Who may use `/admin`: ADMIN_TOKEN through the login form, a server-side session, CSRF tokens.

- ADMIN_TOKEN unset: every `/admin` URL answers 404.
- A token in the query string is refused (and never logged): URLs end up in histories, proxy
  logs and Referer headers.
- Login: POST of the token from the login form (which carries a one-time nonce of the
  pre-login session), compared in constant time; at most `LOGIN_LIMIT` attempts per client IP
  per `LOGIN_WINDOW` seconds, then 429.
- A login creates a session record in Redis (random id in the signed cookie, CSRF token in
  Redis, both expiring with the cookie). Logout deletes the record, so a copy of the old cookie
  and its CSRF token are worthless afterwards.
- Every POST but the login needs the session's CSRF token (constant-time compare).
"""

from __future__ import annotations

import hmac
import logging
import secrets

import redis
from flask import (
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from habitbot.redis_client import KEY_PREFIX
from webhooks.admin.blueprint import SESSION_LIFETIME, bp, client_ip, settings

log = logging.getLogger(__name__)

SESSION_PREFIX = f"{KEY_PREFIX}admin:session:"
LOGIN_PREFIX = f"{KEY_PREFIX}admin:login:"
LOGIN_LIMIT = 5
LOGIN_WINDOW = 60
MAX_TOKEN_LENGTH = 512
PUBLIC_ENDPOINTS = frozenset({"admin.login", "admin.static"})
# Query parameters that look like someone trying to pass a credential in the URL.
SECRET_PARAMS = frozenset({"token", "admin_token", "access_token", "auth", "key", "api_key",
                           "password", "secret", "csrf_token"})


def _redis() -> redis.Redis:
    return current_app.extensions["habitbot"].redis  # type: ignore[no-any-return]


def refuse(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = current_app.make_response(
        (render_template("admin/error.html", status=status, message=message), status))
    response.headers.update(headers or {})
    return response


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def _secret_in_query(admin_token: str) -> bool:
    for name, value in request.args.items(multi=True):
        if name.lower() in SECRET_PARAMS or (value and _same(value, admin_token)):
            return True
    return False


def _session_csrf() -> str | None:
    """The CSRF token of the logged-in session, None when there is no live session."""
    sid = session.get("sid")
    if not isinstance(sid, str) or not sid:
        return None
    raw = _redis().get(SESSION_PREFIX + sid)
    return raw.decode() if isinstance(raw, bytes) else None


@bp.before_request
def _guard() -> Response | None:
    admin_token = settings().admin_token
    if admin_token is None:
        abort(404)
    if _secret_in_query(admin_token):
        log.warning("admin: credential in the query string refused",
                    extra={"client_ip": client_ip(), "path": request.path})
        return refuse(400, "Credentials are never accepted in the URL. Use the login form.")
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    try:
        csrf = _session_csrf()
    except redis.RedisError:
        return refuse(503, "The session store (Redis) is unavailable.")
    if csrf is None:
        if request.method == "GET":
            return redirect(url_for("admin.login"))
        return refuse(403, "Not logged in.")
    g.csrf_token = csrf
    if request.method == "POST" and not _same(request.form.get("csrf_token", ""), csrf):
        log.warning("admin: CSRF token missing or invalid",
                    extra={"client_ip": client_ip(), "path": request.path})
        return refuse(403, "The form's CSRF token is missing or invalid. Reload the page.")
    return None


@bp.app_template_global()
def csrf_token() -> str:
    return str(g.get("csrf_token", ""))


def _login_wait(ip: str) -> int:
    """Counts this attempt; the seconds to wait when over the limit, else 0."""
    key = LOGIN_PREFIX + ip[:64]
    pipe = _redis().pipeline()
    pipe.set(key, 0, ex=LOGIN_WINDOW, nx=True)
    pipe.incr(key)
    pipe.ttl(key)
    _, attempts, ttl = pipe.execute()
    return max(1, int(ttl)) if int(attempts) > LOGIN_LIMIT else 0


def _login_form(status: int = 200, error: str | None = None) -> Response:
    nonce = session.get("login_nonce")
    if not isinstance(nonce, str):
        nonce = session["login_nonce"] = secrets.token_urlsafe(24)
    return current_app.make_response(
        (render_template("admin/login.html", nonce=nonce, error=error), status))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    if request.method == "GET":
        try:
            if _session_csrf() is not None:
                return redirect(url_for("admin.overview"))
        except redis.RedisError:
            return refuse(503, "The session store (Redis) is unavailable.")
        return _login_form()
    admin_token = settings().admin_token
    assert admin_token is not None  # the guard answered 404 otherwise
    ip = client_ip()
    try:
        wait = _login_wait(ip)
        if wait:
            log.warning("admin: login rate limit", extra={"client_ip": ip})
            return refuse(429, f"Too many login attempts. Try again in {wait} s.",
                          {"Retry-After": str(wait)})
        nonce = session.get("login_nonce")
        if not isinstance(nonce, str) or not _same(request.form.get("login_nonce", ""), nonce):
            return _login_form(403, "The login form expired. Try again.")
        given = request.form.get("token", "")
        if len(given) > MAX_TOKEN_LENGTH or not _same(given, admin_token):
            log.warning("admin: login refused", extra={"client_ip": ip})
            return _login_form(403, "Wrong token.")
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        _redis().set(SESSION_PREFIX + sid, csrf, ex=int(SESSION_LIFETIME.total_seconds()))
    except redis.RedisError:
        return refuse(503, "The session store (Redis) is unavailable.")
    session.clear()  # a fresh session: nothing from before the login is carried over
    session["sid"] = sid
    session.permanent = True
    log.info("admin: logged in", extra={"client_ip": ip})
    return redirect(url_for("admin.overview"))


@bp.post("/logout")
def logout() -> Response:
    sid = session.get("sid")
    try:
        if isinstance(sid, str):
            _redis().delete(SESSION_PREFIX + sid)
    except redis.RedisError:
        return refuse(503, "The session store (Redis) is unavailable.")
    session.clear()
    log.info("admin: logged out", extra={"client_ip": client_ip()})
    return redirect(url_for("admin.login"))
