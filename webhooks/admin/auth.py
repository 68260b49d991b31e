"""Who may use `/admin`: ADMIN_TOKEN through the login form, a server-side session, CSRF tokens.

- ADMIN_TOKEN unset: every `/admin` URL answers 404.
- A parameter named like a credential (`token`, `password`, …) is refused, and no query string
  is ever logged: URLs end up in histories, proxy logs and Referer headers. Values are never
  compared with the token (that would be a guessing oracle outside the login limits).
- Login: POST of the token from the login form (which carries a one-time random nonce of the
  pre-login session: nothing derived from the token), compared in constant time. Attempts are
  counted in Redis per address (an IPv6 /64 counts as one address: one host can have all of
  it) and for everyone together: over `LOGIN_LIMIT` from one address or `LOGIN_GLOBAL_LIMIT`
  in all per `LOGIN_WINDOW` seconds, every attempt gets 429, the right token included, until
  the window ends. Sessions already open keep working.
- A login creates a session record in Redis (random id in the signed cookie, CSRF token in
  Redis, both expiring with the cookie); the cookie also carries the token's fingerprint, so a
  new ADMIN_TOKEN ends every session. Logout deletes the record, so a copy of the old cookie
  and its CSRF token are worthless afterwards.
- Every POST but the login needs the session's CSRF token (constant-time compare).
- Refusals are counted (`habitbot_admin_logins_total`) and logged at most once a minute per
  kind and address: a guessing loop writes nothing per attempt.
"""

from __future__ import annotations

import hmac
import ipaddress
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

from habitbot import metrics
from habitbot.logs import Throttled
from habitbot.redis_client import KEY_PREFIX
from webhooks import proxies
from webhooks.admin.blueprint import (
    SESSION_LIFETIME,
    bp,
    client_ip,
    session_secret,
    settings,
    token_fingerprint,
)

log = logging.getLogger(__name__)
quiet = Throttled(log)

SESSION_PREFIX = f"{KEY_PREFIX}admin:session:"
LOGIN_PREFIX = f"{KEY_PREFIX}admin:login:"
LOGIN_GLOBAL_KEY = f"{KEY_PREFIX}admin:login-all"
LOGIN_LIMIT = 5
LOGIN_GLOBAL_LIMIT = 30
LOGIN_WINDOW = 60
IPV6_GROUP = 64
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


def _secret_in_query() -> bool:
    """A parameter named like a credential. Values are never compared with the token: a
    different answer for the right value would let anyone test guesses past the login
    limits."""
    return any(name.lower() in SECRET_PARAMS for name in request.args)


def _fingerprint() -> str:
    admin_token = settings().admin_token
    assert admin_token is not None  # the guard answered 404 otherwise
    return token_fingerprint(session_secret().current(), admin_token)


def _session_csrf() -> str | None:
    """The CSRF token of the logged-in session, None when there is no live session (none, one
    logged out or expired, or one opened with an ADMIN_TOKEN that is no longer the token)."""
    sid = session.get("sid")
    if not isinstance(sid, str) or not sid:
        return None
    fingerprint = session.get("token")
    if not isinstance(fingerprint, str) or not hmac.compare_digest(fingerprint,
                                                                   _fingerprint()):
        _redis().delete(SESSION_PREFIX + sid)
        session.clear()
        return None
    raw = _redis().get(SESSION_PREFIX + sid)
    return raw.decode() if isinstance(raw, bytes) else None


@bp.before_request
def _guard() -> Response | None:
    admin_token = settings().admin_token
    if admin_token is None:
        abort(404)
    if _secret_in_query():
        quiet.log(logging.WARNING, f"query:{_address_key()}",
                  "admin: credential in the query string refused",
                  client_ip=client_ip(), path=request.path)
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
        quiet.log(logging.WARNING, f"csrf:{_address_key()}",
                  "admin: CSRF token missing or invalid", client_ip=client_ip(),
                  path=request.path)
        return refuse(403, "The form's CSRF token is missing or invalid. Reload the page.")
    return None


@bp.app_template_global()
def csrf_token() -> str:
    return str(g.get("csrf_token", ""))


# KEYS: the address's counter, everyone's counter; ARGV: window, address limit, global limit.
# An address over its own limit is not counted globally: one address cannot shut out the rest.
# Returns {0, 0} (go ahead), {1, ttl} (this address waits) or {2, ttl} (everyone waits).
_COUNT_ATTEMPT = """
local function count(key)
  local n = redis.call('INCR', key)
  if n == 1 or redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, ARGV[1]) end
  return n
end
if count(KEYS[1]) > tonumber(ARGV[2]) then return {1, redis.call('TTL', KEYS[1])} end
if count(KEYS[2]) > tonumber(ARGV[3]) then return {2, redis.call('TTL', KEYS[2])} end
return {0, 0}
"""


def _address_key() -> str:
    """The client's address as the limits count it: an IPv6 address by its /64."""
    address = proxies.request_ip(settings().trusted_proxies)
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_GROUP), strict=False))
    return str(address)


def _login_wait(address: str) -> tuple[str, int]:
    """Counts this attempt: ("", 0) when it may go ahead, else which limit and the seconds
    to wait."""
    conn = _redis()
    script = conn.register_script(_COUNT_ATTEMPT)
    which, ttl = script(keys=[LOGIN_PREFIX + address, LOGIN_GLOBAL_KEY],
                        args=[LOGIN_WINDOW, LOGIN_LIMIT, LOGIN_GLOBAL_LIMIT])
    if int(which) == 0:
        return "", 0
    return ("limited_address" if int(which) == 1 else "limited_global"), max(1, int(ttl))


def _counted(outcome: str) -> None:
    metrics.incr(_redis(), "habitbot_admin_logins_total", outcome=outcome)


def _limited(outcome: str, wait: int, ip: str, address: str) -> Response:
    _counted(outcome)
    if outcome == "limited_global":
        quiet.log(logging.WARNING, "limited_global",
                  "admin: login paused for every address (too many attempts)", client_ip=ip)
        current_app.extensions["habitbot"].alerts.raise_alert(
            "WARNING", "admin",
            f"more than {LOGIN_GLOBAL_LIMIT} /admin login attempts in {LOGIN_WINDOW} s from "
            "many addresses: someone may be guessing ADMIN_TOKEN. Logins answer 429 until it "
            "stops; open sessions keep working.", fingerprint="admin_login_flood")
        message = (f"Too many login attempts from many addresses: logging in is paused for "
                   f"everyone. Try again in {wait} s.")
    else:
        quiet.log(logging.WARNING, f"limited:{address}", "admin: login rate limit",
                  client_ip=ip)
        message = f"Too many login attempts. Try again in {wait} s."
    return refuse(429, message, {"Retry-After": str(wait)})


def _login_form(status: int = 200, error: str | None = None) -> Response:
    """The form with the pre-login session's nonce: a random value, nothing from the token."""
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
            session_secret().current()  # the form's cookie needs it
        except redis.RedisError:
            return refuse(503, "The session store (Redis) is unavailable.")
        return _login_form()
    admin_token = settings().admin_token
    assert admin_token is not None  # the guard answered 404 otherwise
    ip, address = client_ip(), _address_key()
    try:
        limited, wait = _login_wait(address)
        if limited:
            return _limited(limited, wait, ip, address)
        nonce = session.get("login_nonce")
        if not isinstance(nonce, str) or not _same(request.form.get("login_nonce", ""), nonce):
            _counted("expired_form")
            return _login_form(403, "The login form expired. Try again.")
        given = request.form.get("token", "")
        if len(given) > MAX_TOKEN_LENGTH or not _same(given, admin_token):
            _counted("wrong_token")
            quiet.log(logging.WARNING, f"refused:{address}", "admin: login refused",
                      client_ip=ip)
            return _login_form(403, "Wrong token.")
        fingerprint = _fingerprint()
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        _redis().set(SESSION_PREFIX + sid, csrf, ex=int(SESSION_LIFETIME.total_seconds()))
    except redis.RedisError:
        return refuse(503, "The session store (Redis) is unavailable.")
    session.clear()  # a fresh session: nothing from before the login is carried over
    session["sid"] = sid
    session["token"] = fingerprint
    session.permanent = True
    _counted("ok")
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
