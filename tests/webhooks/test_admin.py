"""/admin through Flask's test client against real PostgreSQL and Redis: who gets in, what is
refused (and changes nothing), and what each page shows."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta

import pytest
from alembic import command
from flask import Flask
from flask.json.tag import TaggedJSONSerializer
from flask.testing import FlaskClient
from itsdangerous import BadSignature, URLSafeTimedSerializer
from rq import Queue
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from habitbot import metrics
from habitbot.config import load_settings
from habitbot.db import make_engine
from habitbot.models import (
    AdminAlert,
    Habit,
    HabitCheckin,
    HabitSchedule,
    JobExecutionLog,
    Payment,
    ReminderDelivery,
    User,
)
from habitbot.services import billing, heartbeat
from habitbot.services.health import worker_beat
from habitbot.services.schema import alembic_config_for, run_deploy_gate
from tests.conftest import make_env
from tests.support.jobs import run_burst
from webhooks.admin.auth import LOGIN_GLOBAL_LIMIT, LOGIN_LIMIT, SESSION_PREFIX
from webhooks.admin.blueprint import COOKIE_NAME, SECRET_REDIS_KEY
from webhooks.app import create_app

TOKEN = "admin-Token-for-tests-0123456789"
NO_TELEGRAM = "http://127.0.0.1:9"
PAGES = ("/admin/", "/admin/activity", "/admin/payments", "/admin/jobs", "/admin/users")
session_json_serializer = TaggedJSONSerializer()
EVIL = ("' OR '1'='1", "1; DROP TABLE users; --", "<script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>')


def _app(database_url: str, redis_url: str, api_url: str = NO_TELEGRAM, **extra: str) -> Flask:
    env = make_env(database_url, redis_url, api_url, **extra)
    return create_app(load_settings(env), configure_logging=False)


def _close(app: Flask) -> None:
    app.extensions["health"].close()
    app.extensions["habitbot"].close()


@pytest.fixture
def make_app(database_url, redis_url, redis_conn) -> Iterator:
    apps: list[Flask] = []

    def build(db_url: str = database_url, api_url: str = NO_TELEGRAM, **extra: str) -> Flask:
        extra.setdefault("ADMIN_TOKEN", TOKEN)
        app = _app(db_url, redis_url, api_url, **extra)
        apps.append(app)
        return app

    yield build
    for app in apps:
        _close(app)


@pytest.fixture
def app(make_app) -> Flask:
    return make_app()


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def alive(redis_conn):
    heartbeat.beat(redis_conn, "bot")
    heartbeat.beat(redis_conn, "scheduler")
    worker_beat(redis_conn, "worker-0")
    return redis_conn


def make_failed_job(redis_conn) -> str:
    """A job that really ran in a worker and failed (ValueError)."""
    queue = Queue("default", connection=redis_conn)
    job = queue.enqueue("builtins.int", "not a number")
    run_burst(redis_conn, queue.name)
    return job.id


@pytest.fixture
def failed_job(redis_conn) -> str:
    job_id = make_failed_job(redis_conn)
    assert _failed_ids(redis_conn) == [job_id]
    return job_id


def _failed_ids(redis_conn) -> list[str]:
    return FailedJobRegistry(queue=Queue("default", connection=redis_conn)).get_job_ids()


def _html(response) -> str:
    return response.get_data(as_text=True)


def _field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert match, f"no {name} in the page"
    return match.group(1)


def _login(client: FlaskClient, token: str = TOKEN, **kwargs):
    nonce = _field(_html(client.get("/admin/login", **kwargs)), "login_nonce")
    return client.post("/admin/login", data={"token": token, "login_nonce": nonce}, **kwargs)


def _csrf(client: FlaskClient) -> str:
    return _field(_html(client.get("/admin/jobs")), "csrf_token")


def _charts(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="admin-charts">(.*?)</script>',
                      html, re.S)
    assert match, "no chart data in the page"
    return json.loads(match.group(1))


def _dataset(chart: dict, label: str) -> list:
    return next(d["data"] for d in chart["data"]["datasets"] if d["label"] == label)


def _logged_in(client: FlaskClient) -> bool:
    return client.get("/admin/").status_code == 200


# -- who gets in ---------------------------------------------------------------------------

def test_admin_answers_404_everywhere_when_admin_token_is_unset(database_url, redis_url,
                                                                redis_conn):
    app = _app(database_url, redis_url)
    try:
        client = app.test_client()
        for path in (*PAGES, "/admin/login", "/admin/static/admin.css"):
            assert client.get(path).status_code == 404, path
        assert client.post("/admin/login", data={"token": ""}).status_code == 404
        assert client.post("/admin/jobs/requeue", data={"all": "1"}).status_code == 404
        assert client.get("/health").status_code in (200, 503)  # the rest of the app is there
    finally:
        _close(app)


def test_every_page_redirects_to_the_login_without_a_session(client):
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].endswith("/admin/login")
    login = client.get("/admin/login")
    assert login.status_code == 200 and 'type="password"' in _html(login)


def test_unauthenticated_actions_are_refused_and_change_nothing(client, failed_job, redis_conn):
    for data in ({"job_id": failed_job}, {"all": "1"}):
        response = client.post("/admin/jobs/requeue", data=data)
        assert response.status_code == 403 and "Not logged in" in _html(response)
    assert client.post("/admin/logout").status_code == 403
    assert _failed_ids(redis_conn) == [failed_job]


def test_login_with_the_right_token_then_logout(client):
    response = _login(client)
    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/")
    for path in PAGES:
        assert client.get(path).status_code == 200, path
    assert client.get("/admin/login").headers["Location"].endswith("/admin/")
    response = client.post("/admin/logout", data={"csrf_token": _csrf(client)})
    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/login")
    assert not _logged_in(client)


@pytest.mark.parametrize("token", ["", "wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper(),
                                   "ключ-не-тот", "x" * 5000])
def test_a_wrong_token_is_refused(client, token):
    response = _login(client, token)
    assert response.status_code == 403 and "Wrong token." in _html(response)
    assert not _logged_in(client)


def test_login_without_the_forms_nonce_is_refused(client):
    response = client.post("/admin/login", data={"token": TOKEN})
    assert response.status_code == 403 and "The login form expired" in _html(response)
    response = client.post("/admin/login", data={"token": TOKEN, "login_nonce": "forged"})
    assert response.status_code == 403
    assert not _logged_in(client)


@pytest.mark.parametrize("path", ["/admin/?token={t}", "/admin/login?token={t}",
                                  "/admin/jobs?admin_token={t}", "/admin/users?Password={t}",
                                  "/admin/payments?api_key={t}", "/admin/?token=nonsense"])
def test_a_token_in_the_query_string_is_refused_and_never_logged(client, caplog, path):
    caplog.set_level(logging.DEBUG)
    url = path.format(t=TOKEN)
    response = client.get(url)
    assert response.status_code == 400
    assert "never accepted in the URL" in _html(response) and TOKEN not in _html(response)
    assert COOKIE_NAME not in response.headers.get("Set-Cookie", "")
    nonce = _field(_html(client.get("/admin/login")), "login_nonce")
    posted = client.post(f"/admin/login?token={TOKEN}", data={"login_nonce": nonce})
    assert posted.status_code == 400
    assert not _logged_in(client)
    assert "credential in the query string refused" in caplog.text
    for record in caplog.records:
        assert TOKEN not in record.getMessage() and TOKEN not in str(vars(record))


@pytest.mark.parametrize("path", ["/admin/?q={g}", "/admin/login?next={g}",
                                  "/admin/users?telegram_id={g}"])
def test_a_guess_in_the_query_string_is_answered_like_any_other_value(client, caplog, path):
    """The right token in an ordinary parameter gets the same answer as a wrong guess: the URL
    is no way to test guesses past the login limits (and it is never logged)."""
    caplog.set_level(logging.DEBUG)
    right, wrong = client.get(path.format(g=TOKEN)), client.get(path.format(g="wrong-guess"))
    assert (right.status_code, right.headers.get("Location")) == \
        (wrong.status_code, wrong.headers.get("Location"))
    assert right.status_code in (200, 302)
    for record in caplog.records:
        assert TOKEN not in record.getMessage() and TOKEN not in str(vars(record))


def test_a_token_in_the_query_string_is_refused_even_when_logged_in(client):
    _login(client)
    assert client.get(f"/admin/?token={TOKEN}").status_code == 400
    assert client.get("/admin/").status_code == 200


def test_session_cookie_is_httponly_strict_scoped_and_expiring(client):
    cookie = _login(client).headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    assert "Expires=" in cookie
    assert "Secure" not in cookie  # plain HTTP without a trusted proxy


def test_session_cookie_is_secure_behind_a_trusted_tls_proxy(make_app):
    proxied = make_app(TRUSTED_PROXIES="1").test_client()
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    assert "Secure" in _login(proxied, headers=headers).headers["Set-Cookie"]
    direct = make_app().test_client()
    assert "Secure" in _login(direct, base_url="https://localhost").headers["Set-Cookie"]
    # Without a trusted proxy the header is the client's word: not believed.
    untrusted = make_app().test_client()
    assert "Secure" not in _login(untrusted, headers=headers).headers["Set-Cookie"]


def test_the_session_key_is_the_same_in_every_worker_and_follows_the_token(make_app):
    first, second = make_app().test_client(), make_app().test_client()
    _login(first)
    cookie = first.get_cookie(COOKIE_NAME, path="/admin")
    assert cookie is not None
    second.set_cookie(COOKIE_NAME, cookie.value, path="/admin")
    assert _logged_in(second)  # another gunicorn worker (or a restart) reads the same cookie
    rotated = make_app(ADMIN_TOKEN="A-new-token-after-rotation-7").test_client()
    rotated.set_cookie(COOKIE_NAME, cookie.value, path="/admin")
    assert not _logged_in(rotated)


def _old_token_derived_keys() -> list[str]:
    """Keys an attacker would try: what the cookie used to be signed with, and the obvious."""
    derived = hmac.new(TOKEN.encode(), b"habitbot /admin session signing key v1",
                       hashlib.sha256).hexdigest()
    return [derived, TOKEN, hashlib.sha256(TOKEN.encode()).hexdigest()]


def _serializer(key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(key, salt="cookie-session", serializer=session_json_serializer,
                                  signer_kwargs={"key_derivation": "hmac",
                                                 "digest_method": hashlib.sha1})


def test_the_login_pages_cookie_cannot_be_checked_against_token_guesses(client):
    """An anonymous visitor's cookie was signed with a key derived from ADMIN_TOKEN: hashing
    guesses until one verifies the cookie found the token offline, past every limit."""
    assert client.get("/admin/login").status_code == 200
    cookie = client.get_cookie(COOKIE_NAME, path="/admin")
    assert cookie is not None  # the form's nonce
    for key in _old_token_derived_keys():
        with pytest.raises(BadSignature):
            _serializer(key).loads(cookie.value)
    _, payload = _serializer("any").loads_unsafe(cookie.value)
    assert set(payload) == {"login_nonce"} and TOKEN not in json.dumps(payload)


def test_the_generated_secret_is_random_kept_in_redis_and_shared(make_app, redis_conn):
    first = make_app().test_client()
    _login(first)
    stored = redis_conn.get(SECRET_REDIS_KEY)
    assert stored is not None and len(stored) >= 48 and TOKEN.encode() not in stored
    cookie = first.get_cookie(COOKIE_NAME, path="/admin")
    assert cookie is not None
    assert _serializer(stored.decode()).loads(cookie.value)["sid"]
    second = make_app().test_client()  # another worker, or the app after a restart
    second.set_cookie(COOKIE_NAME, cookie.value, path="/admin")
    assert _logged_in(second) and redis_conn.get(SECRET_REDIS_KEY) == stored


def test_secret_key_from_the_environment_signs_the_cookie(make_app, redis_conn):
    key = "Zx8_kP3m-Qr7vT2nLw9cYb4hJd6fGs1aXe5uR0"
    client = make_app(SECRET_KEY=key).test_client()
    _login(client)
    cookie = client.get_cookie(COOKIE_NAME, path="/admin")
    assert cookie is not None and _serializer(key).loads(cookie.value)["sid"]
    assert redis_conn.get(SECRET_REDIS_KEY) is None


def test_a_forged_or_old_secret_cookie_is_refused(client, redis_conn):
    _login(client)
    cookie = client.get_cookie(COOKIE_NAME, path="/admin")
    assert cookie is not None
    _, payload = _serializer("any").loads_unsafe(cookie.value)
    assert redis_conn.exists(SESSION_PREFIX + payload["sid"])  # a live session behind it
    for key in [*_old_token_derived_keys(), "guessed-secret"]:
        forged = _serializer(key).dumps(payload)
        client.set_cookie(COOKIE_NAME, forged, path="/admin")
        assert not _logged_in(client), key
    tampered = cookie.value[:-2] + ("AA" if not cookie.value.endswith("AA") else "BB")
    client.set_cookie(COOKIE_NAME, tampered, path="/admin")
    assert not _logged_in(client)
    client.set_cookie(COOKIE_NAME, cookie.value, path="/admin")
    assert _logged_in(client)  # the genuine cookie still works


def test_changing_the_token_logs_every_session_out(make_app, redis_conn):
    before = make_app().test_client()
    _login(before)
    cookie = before.get_cookie(COOKIE_NAME, path="/admin")
    assert cookie is not None
    sid = _serializer("any").loads_unsafe(cookie.value)[1]["sid"]
    restarted = make_app(ADMIN_TOKEN="Rotated-admin-token-4f9c2e7b1d").test_client()
    restarted.set_cookie(COOKIE_NAME, cookie.value, path="/admin")  # same secret, new token
    response = restarted.get("/admin/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    assert not redis_conn.exists(SESSION_PREFIX + sid)  # the old session is gone for good
    assert _login(restarted, "Rotated-admin-token-4f9c2e7b1d").status_code == 302


def test_login_attempts_are_rate_limited_per_client_ip(make_app):
    app = make_app(TRUSTED_PROXIES="1")
    client = app.test_client()
    attacker = {"X-Forwarded-For": "198.51.100.7"}
    for _ in range(LOGIN_LIMIT):
        assert _login(client, "guess", headers=attacker).status_code == 403
    limited = _login(client, TOKEN, headers=attacker)  # even the right token now
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert "Too many login attempts" in _html(limited)
    assert not _logged_in(client)
    other = app.test_client()
    assert _login(other, headers={"X-Forwarded-For": "198.51.100.8"}).status_code == 302


def test_rotating_addresses_inside_one_ipv6_64_is_one_address(make_app):
    app = make_app(TRUSTED_PROXIES="1")
    client = app.test_client()
    for n in range(LOGIN_LIMIT):
        hop = {"X-Forwarded-For": f"2001:db8:7:1::{n + 1:x}"}
        assert _login(client, "guess", headers=hop).status_code == 403
    for address in ("2001:db8:7:1::abcd", "2001:db8:7:1:ffff:ffff:ffff:ffff",
                    "2001:db8:7:1:1234:5678:9abc:def0"):
        limited = _login(client, TOKEN, headers={"X-Forwarded-For": address})
        assert limited.status_code == 429, address
    assert not _logged_in(client)
    neighbour = app.test_client()  # the next /64 is someone else
    assert _login(neighbour, headers={"X-Forwarded-For": "2001:db8:7:2::1"}).status_code == 302


def test_the_global_limit_stops_a_guess_from_many_addresses(make_app, engine, redis_conn):
    app = make_app(TRUSTED_PROXIES="1")
    operator = app.test_client()
    _login(operator, headers={"X-Forwarded-For": "192.0.2.1"})
    attacker = app.test_client()
    attempts = 1
    for n in range(LOGIN_GLOBAL_LIMIT * 2):
        response = _login(attacker, "guess", headers={"X-Forwarded-For": f"198.18.{n}.1"})
        attempts += 1
        if response.status_code == 429:
            break
        assert response.status_code == 403
    assert attempts == LOGIN_GLOBAL_LIMIT + 1  # the operator's login counted too
    assert "paused for everyone" in _html(response)
    assert int(response.headers["Retry-After"]) > 0
    fresh = _login(app.test_client(), TOKEN, headers={"X-Forwarded-For": "203.0.113.99"})
    assert fresh.status_code == 429  # even the right token, from a new address
    assert _logged_in(operator)  # open sessions keep working
    for n in range(20):
        _login(attacker, "guess", headers={"X-Forwarded-For": f"198.19.{n}.1"})
    with Session(engine) as session:
        floods = session.execute(select(AdminAlert.status).where(
            AdminAlert.fingerprint == "admin_login_flood")).scalars().all()
    assert len(floods) == 1  # one alert, however long it goes on
    counted = metrics.stored(redis_conn)
    assert counted['habitbot_admin_logins_total{outcome="limited_global"}'] == 22


def test_a_guessing_loop_is_counted_and_logged_rarely(make_app, redis_conn, caplog):
    caplog.set_level(logging.INFO, logger="webhooks.admin.auth")
    app = make_app(TRUSTED_PROXIES="1")
    client = app.test_client()
    for _ in range(LOGIN_LIMIT * 4):
        _login(client, "guess", headers={"X-Forwarded-For": "198.51.100.77"})
    counted = metrics.stored(redis_conn)
    assert counted['habitbot_admin_logins_total{outcome="wrong_token"}'] == LOGIN_LIMIT
    assert counted['habitbot_admin_logins_total{outcome="limited_address"}'] == \
        LOGIN_LIMIT * 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("admin: login refused") == 1
    assert lines.count("admin: login rate limit") == 1


def test_a_spoofed_forwarded_for_does_not_escape_the_rate_limit(client):
    for n in range(LOGIN_LIMIT):
        assert _login(client, "guess",
                      headers={"X-Forwarded-For": f"192.0.2.{n}"}).status_code == 403
    limited = _login(client, TOKEN, headers={"X-Forwarded-For": "192.0.2.200"})
    assert limited.status_code == 429


# -- CSRF ----------------------------------------------------------------------------------

@pytest.mark.parametrize("csrf", [None, "", "forged", "' OR 1=1 --", "<script>x</script>"])
def test_a_missing_or_forged_csrf_token_is_refused(client, failed_job, redis_conn, csrf):
    _login(client)
    data = {"job_id": failed_job} if csrf is None else {"job_id": failed_job, "csrf_token": csrf}
    response = client.post("/admin/jobs/requeue", data=data)
    assert response.status_code == 403 and "CSRF token is missing or invalid" in _html(response)
    assert "<script>x" not in _html(response)
    assert _failed_ids(redis_conn) == [failed_job]
    assert _logged_in(client)


def test_the_csrf_token_of_another_session_is_refused(make_app, failed_job, redis_conn):
    alice, mallory = make_app().test_client(), make_app().test_client()
    _login(alice), _login(mallory)
    response = alice.post("/admin/jobs/requeue",
                          data={"job_id": failed_job, "csrf_token": _csrf(mallory)})
    assert response.status_code == 403
    assert _failed_ids(redis_conn) == [failed_job]


def test_a_csrf_token_replayed_after_logout_is_refused(client, failed_job, redis_conn):
    _login(client)
    csrf = _csrf(client)
    old_cookie = client.get_cookie(COOKIE_NAME, path="/admin")
    assert old_cookie is not None
    client.post("/admin/logout", data={"csrf_token": csrf})
    # The captured cookie and token together: the session behind them is gone.
    client.set_cookie(COOKIE_NAME, old_cookie.value, path="/admin")
    replay = client.post("/admin/jobs/requeue", data={"job_id": failed_job, "csrf_token": csrf})
    assert replay.status_code == 403
    # Logged in again: the old token belongs to no session.
    client.delete_cookie(COOKIE_NAME, path="/admin")
    _login(client)
    again = client.post("/admin/jobs/requeue", data={"job_id": failed_job, "csrf_token": csrf})
    assert again.status_code == 403 and "CSRF" in _html(again)
    assert _failed_ids(redis_conn) == [failed_job]


# -- bad input: SQL and HTML in every parameter --------------------------------------------

@pytest.mark.parametrize("evil", EVIL)
def test_sql_and_html_in_every_parameter_are_refused_or_escaped(client, engine, failed_job,
                                                                redis_conn, evil):
    with Session(engine) as session, session.begin():
        session.add(User(telegram_id=4242))

    def users() -> int:
        with Session(engine) as session:
            return int(session.execute(select(func.count()).select_from(User)).scalar_one())

    def clean(response) -> str:
        body = _html(response)
        assert evil not in body, response.request.path
        return body

    nonce = _field(_html(client.get("/admin/login")), "login_nonce")
    assert clean(client.post("/admin/login", data={"token": evil, "login_nonce": nonce})
                 ).count("Wrong token.") == 1
    assert client.post("/admin/login",
                       data={"token": TOKEN, "login_nonce": evil}).status_code == 403
    _login(client)
    csrf = _csrf(client)
    assert clean(client.get("/admin/users", query_string={"telegram_id": evil})
                 ).count("must be a positive whole number") == 1
    assert client.get("/admin/users", query_string={"telegram_id": evil}).status_code == 400
    for data in ({"job_id": evil, "csrf_token": csrf}, {"all": evil, "csrf_token": csrf}):
        response = client.post("/admin/jobs/requeue", data=data)
        assert response.status_code == 400 and clean(response)
    response = client.post("/admin/jobs/requeue", data={"job_id": failed_job, "csrf_token": evil})
    assert response.status_code == 403 and clean(response)
    for path in PAGES:  # unknown parameters are ignored, never reflected
        response = client.get(path, query_string={"q": evil, "page": evil})
        assert response.status_code == 200 and clean(response)
    assert users() == 1
    assert _failed_ids(redis_conn) == [failed_job]
    assert _logged_in(client)


@pytest.mark.parametrize("raw", ["0", "-5", "1e9", "99999999999999999999", "9223372036854775808",
                                 " ", "12 34", "０１２"])
def test_malformed_telegram_ids_are_refused(client, raw):
    _login(client)
    response = client.get("/admin/users", query_string={"telegram_id": raw})
    assert response.status_code in (200, 400)
    if raw.strip():
        assert response.status_code == 400, raw
    else:
        assert 'id="user-report"' not in _html(response)


def test_requeue_of_an_unknown_job_is_404_and_changes_nothing(client, failed_job, redis_conn):
    _login(client)
    response = client.post("/admin/jobs/requeue",
                           data={"job_id": "no-such-job", "csrf_token": _csrf(client)})
    assert response.status_code == 404 and "No such failed job" in _html(response)
    assert _failed_ids(redis_conn) == [failed_job]


# -- the pages, with data ------------------------------------------------------------------

@pytest.fixture
def world(engine, redis_conn, alive, failed_job):
    """Users of every kind, habits, check-ins, reminders, payments, job runs, a failed job."""
    return {**populate(engine), "failed_job": failed_job}


def populate(engine) -> dict:
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        alice = User(telegram_id=1001, first_name="Alice", tier="premium",
                     premium_ends_at=now + timedelta(days=20), last_seen_at=now)
        bob = User(telegram_id=1002, tier="trial", trial_started_at=now,
                   trial_ends_at=now + timedelta(days=3), last_seen_at=now - timedelta(days=2))
        carol = User(telegram_id=1003, is_blocked=True, blocked_at=now)
        session.add_all([alice, bob, carol, User(telegram_id=1004, last_seen_at=now)])
        session.flush()
        read = Habit(user_id=alice.id, name="Read")
        evil = Habit(user_id=alice.id, name="<script>alert('habit')</script>", position=1)
        session.add_all([read, evil])
        session.flush()
        schedule = HabitSchedule(habit_id=read.id, local_time=time(8, 30))
        session.add(schedule)
        session.flush()
        today = now.date()
        for day, status in ((today, "done"), (today - timedelta(days=1), "done"),
                            (today - timedelta(days=10), "done"),
                            (today - timedelta(days=3), "skipped"),
                            (today - timedelta(days=60), "done")):  # outside the 30 days
            session.add(HabitCheckin(habit_id=read.id, user_id=alice.id, local_date=day,
                                     status=status))
        three_hours_ago = now - timedelta(hours=3)
        for minute, status in ((0, "sent"), (1, "sent"), (2, "sent"), (3, "failed"),
                               (4, "missed")):
            session.add(ReminderDelivery(
                schedule_id=schedule.id, habit_id=read.id, user_id=alice.id,
                fire_at=three_hours_ago + timedelta(minutes=minute), status=status,
                created_at=three_hours_ago + timedelta(minutes=minute)))
        session.add(JobExecutionLog(job_name="habit_reminders", status="success",
                                    started_at=now - timedelta(minutes=1), finished_at=now,
                                    items=12))
        session.add(JobExecutionLog(job_name="cleanup", status="failed",
                                    started_at=now - timedelta(minutes=5),
                                    finished_at=now - timedelta(minutes=4),
                                    error="OperationalError: <b>boom</b>"))
        ids = {"alice": alice.id, "bob": bob.id}
    stale, _ = billing.create_payment(engine, ids["alice"], "yookassa", "balance_topup",
                                      50000, "RUB")
    billing.create_payment(engine, ids["bob"], "cryptobot", "balance_topup", 30000, "RUB")
    paid, _ = billing.create_payment(engine, ids["bob"], "stars", "subscription", 150, "XTR",
                                     plan="month")
    billing.complete_payment(engine, paid, 150, "XTR", provider_payment_id="charge-1")
    with Session(engine) as session, session.begin():
        session.execute(update(Payment).where(Payment.id == stale).values(
            created_at=now - timedelta(hours=2), provider_payment_id="yk-stale-1"))
    return {"now": now, "stale_payment": stale}


def test_overview_shows_processes_users_send_rate_and_alerts(make_app, world, emulator,
                                                             emu_client):
    app = make_app(api_url=emulator.url)
    client = app.test_client()
    runtime = app.extensions["habitbot"]
    runtime.alerts.raise_alert("CRITICAL", "health_check", "database <b>down</b>")
    _login(client)
    html = _html(client.get("/admin/"))
    assert 'id="health-status">ok<' in html and "DEGRADED" not in html
    processes = html.split('id="processes"')[1].split("</table>")[0]
    for name in ("bot", "scheduler", "workers", "database", "redis", "schema"):
        assert f"<td>{name}</td>" in processes
    assert "FAIL" not in processes
    figures = html.split('id="figures"')[1].split("</table>")[0]
    for label, value in (("users", 4), ("users active in 24 h", 2), ("users premium", 2),
                         ("users on trial", 1), ("users blocked", 1), ("habits active", 2)):
        assert f"<th>{label}</th><td class=\"num\">{value}</td>" in figures, label
    assert "database &lt;b&gt;down&lt;/b&gt;" in html and "<b>down</b>" not in html
    assert "send-rate" in _charts(html)
    # Messages through the real sender show up in its shared counters on the next view.
    emu_client.add_user(555, first_name="Sam")
    for n in range(3):
        runtime.sender.send_message(555, f"hello {n}")
    totals = _html(client.get("/admin/")).split('id="sender-totals"')[1].split("</table>")[0]
    assert re.search(r"<td>interactive</td><td class=\"num\">3</td>", totals), totals


def test_activity_charts_count_habits_checkins_and_reminders(client, world):
    _login(client)
    charts = _charts(_html(client.get("/admin/activity")))
    daily, hourly = charts["daily"], charts["hourly"]
    assert len(daily["data"]["labels"]) == 30 and len(hourly["data"]["labels"]) == 48
    assert sum(_dataset(daily, "new habits")) == 2
    assert sum(_dataset(daily, "check-ins done")) == 3
    assert sum(_dataset(daily, "skipped")) == 1
    assert _dataset(daily, "check-ins done")[-1] == 1  # today
    assert (sum(_dataset(hourly, "sent")), sum(_dataset(hourly, "failed")),
            sum(_dataset(hourly, "missed"))) == (3, 1, 1)
    assert hourly["stacked"] is True


def test_payments_page_highlights_payments_pending_too_long(client, world):
    _login(client)
    html = _html(client.get("/admin/payments"))
    assert 'id="stale-total">1<' in html
    stale = html.split('id="stale-payments"')[1].split("</table>")[0]
    assert "yk-stale-1" in stale and 'class="stale"' in stale and "500.00 RUB" in stale
    assert "cryptobot" not in stale  # pending, but only for a moment
    groups = html.split('id="payment-groups"')[1].split("</table>")[0]
    assert "<td>stars</td><td>succeeded</td><td>XTR</td>" in groups and "150 XTR" in groups
    highlighted = [row for row in groups.split("<tr") if 'class="stale"' in row]
    assert len(highlighted) == 1 and "yookassa" in highlighted[0]
    chart = _charts(html)["payments"]
    assert chart["data"]["labels"] == ["cryptobot", "stars", "yookassa"]
    assert _dataset(chart, "pending") == [1, 0, 1] and _dataset(chart, "succeeded") == [0, 1, 0]


def test_jobs_page_lists_runs_and_requeues_a_failed_job(client, world, redis_conn):
    _login(client)
    html = _html(client.get("/admin/jobs"))
    failed = html.split('id="failed-jobs"')[1].split("</table>")[0]
    assert world["failed_job"] in failed and "ValueError" in failed
    runs = html.split('id="job-runs"')[1].split("</table>")[0]
    assert "habit_reminders" in runs and "OperationalError: &lt;b&gt;boom&lt;/b&gt;" in runs
    assert _dataset(_charts(html)["queues"], "failed") == [0, 1, 0, 0]
    response = client.post("/admin/jobs/requeue",
                           data={"job_id": world["failed_job"], "csrf_token": _csrf(client)})
    assert response.status_code == 302
    page = _html(client.get("/admin/jobs"))
    assert f"Requeued 1 job(s): {world['failed_job']}" in page
    assert _failed_ids(redis_conn) == []
    assert Queue("default", connection=redis_conn).job_ids == [world["failed_job"]]


def test_requeue_all(client, failed_job, redis_conn):
    _login(client)
    response = client.post("/admin/jobs/requeue", data={"all": "1", "csrf_token": _csrf(client)})
    assert response.status_code == 302 and _failed_ids(redis_conn) == []
    again = client.post("/admin/jobs/requeue", data={"all": "1", "csrf_token": _csrf(client)})
    assert again.status_code == 404 and "There are no failed jobs" in _html(again)


def test_user_lookup_shows_plan_balance_habits_and_deliveries_without_secrets(client, world,
                                                                              engine):
    _login(client)
    response = client.get("/admin/users", query_string={"telegram_id": "1001"})
    assert response.status_code == 200
    report = _html(response).split('id="user-report">')[1].split("</pre>")[0]
    assert "user 1001" in report and "plan premium" in report and "balance 0.00 RUB" in report
    assert "Read [active]" in report
    assert "&lt;script&gt;alert(&#39;habit&#39;)&lt;/script&gt;" in report
    assert "<script>alert" not in _html(response)
    assert report.count(" sent") == 3 and "failed" in report and "missed" in report
    with Session(engine) as session:
        key = session.execute(select(Payment.idempotence_key)).scalars().first()
    assert str(key) not in _html(response)
    missing = client.get("/admin/users", query_string={"telegram_id": "999"})
    assert missing.status_code == 404 and "No user with Telegram id 999" in _html(missing)


# -- degraded and broken dependencies ------------------------------------------------------

def test_schema_drift_shows_the_degraded_banner_with_the_reason(scratch_database, make_app,
                                                                alive):
    eng = make_engine(scratch_database, "cli")
    run_deploy_gate(eng)
    eng.dispose()
    command.downgrade(alembic_config_for(scratch_database), "-1")
    client = make_app(scratch_database).test_client()
    _login(client)
    html = _html(client.get("/admin/"))
    banner = html.split('id="degraded-banner"')[1].split("</div>")[0]
    assert "DEGRADED mode" in banner and "revision" in banner and "make deploy-gate" in banner


def test_database_down_leaves_the_pages_up_with_a_notice(make_app, database_url, pg_proxy,
                                                         alive):
    client = make_app(pg_proxy.url_for(database_url), DB_CONNECT_TIMEOUT="1").test_client()
    _login(client)
    pg_proxy.set_mode("refuse")
    html = _html(client.get("/admin/"))
    assert 'id="health-status">fail<' in html and "Health: fail" in html
    assert "data source is unavailable: figures" in html
    for path in PAGES[1:]:
        assert client.get(path).status_code == 200, path


def test_redis_down_refuses_clearly(database_url, redis_url, redis_proxy, redis_conn):
    app = _app(database_url, redis_proxy.url_for(redis_url), ADMIN_TOKEN=TOKEN)
    try:
        operator, newcomer = app.test_client(), app.test_client()
        _login(operator)
        nonce = _field(_html(newcomer.get("/admin/login")), "login_nonce")
        redis_proxy.set_mode("refuse")
        response = newcomer.post("/admin/login", data={"token": TOKEN, "login_nonce": nonce})
        assert response.status_code == 503 and "Redis" in _html(response)
        response = operator.get("/admin/")
        assert response.status_code == 503 and "session store (Redis) is unavailable" in \
            _html(response)
        redis_proxy.set_mode("pass")
        assert _logged_in(operator)
    finally:
        _close(app)


def test_responses_forbid_framing_sniffing_and_inline_scripts(client):
    _login(client)
    headers = client.get("/admin/").headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"


def test_chart_library_is_served_locally(client):
    response = client.get("/admin/static/chart.umd.js")
    assert response.status_code == 200 and b"Chart.js v4" in response.data[:200]
    response.close()
