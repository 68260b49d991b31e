"""Routes of the emulator's JSON control API (``/control/...``) and of the sandbox chat page.

Every control route maps to one :class:`Control` operation. Bodies are JSON objects; the bot a
route acts on is chosen with ``token`` (query string or body) and defaults to the first token.
The chat page is ``GET /`` with its assets under ``/static/`` (files of ``sandbox/static``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from habitbot.sandbox.telegram_emulator_control import Control, ControlError

Handler = Callable[[Control, "Request"], Any]

MESSAGE_FIELDS = ("text", "language_code", "first_name", "username", "location", "sticker",
                  "photo", "voice", "document")
PAYMENT_FIELDS = ("invoice_payload", "currency", "total_amount")

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_PATHS = {"/": "index.html", "/index.html": "index.html"}
STATIC_PREFIX = "/static/"
ASSET_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.[a-z0-9]+")
ASSET_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class Request:
    """Path groups, query parameters and JSON body of one control call."""

    def __init__(self, groups: tuple[str, ...], query: dict[str, str], body: dict[str, Any]):
        self.groups = groups
        self.query = query
        self.body = body

    @property
    def token(self) -> str | None:
        return self.body.get("token") or self.query.get("token")

    def pick(self, *names: str) -> dict[str, Any]:
        return {name: self.body[name] for name in names if name in self.body}

    def query_flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true", "yes")

    def query_number(self, name: str) -> float | None:
        value = self.query.get(name)
        if value in (None, ""):
            return None
        try:
            return float(value)
        except ValueError:
            raise ControlError(400, f"{name} must be a number") from None


def _user(request: Request) -> int:
    return int(request.groups[0])


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ControlError(400, "timeout must be a number of seconds") from None


def _transcript(control: Control, request: Request) -> Any:
    wait = request.query_number("wait_version")
    return control.transcript(
        int(request.groups[0]),
        token=request.token,
        include_deleted=request.query_flag("include_deleted"),
        wait_version=None if wait is None else int(wait),
        timeout=request.query_number("timeout") or 0.0,
    )


def _sends(control: Control, request: Request) -> Any:
    chat_id = request.query_number("chat_id")
    sends = control.sends(request.query_number("since"),
                          None if chat_id is None else int(chat_id))
    return {"sends": sends}


def _fault(control: Control, request: Request) -> Any:
    body = request.body
    if "mode" not in body:
        raise ControlError(400, "mode is required")
    return control.add_fault(str(body["mode"]), **request.pick(
        "methods", "count", "seconds", "status", "retry_after"))


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    (method, re.compile(f"^/control/{pattern}$"), handler)
    for method, pattern, handler in [
        ("GET", "health", lambda c, r: {"ok": True}),
        ("POST", "reset", lambda c, r: c.reset()),
        ("GET", "bots", lambda c, r: {"bots": c.bots()}),
        ("GET", "users", lambda c, r: {"users": c.users()}),
        ("POST", "users", lambda c, r: {"ok": True, "user": c.add_user(
            r.body.get("user_id"), **r.pick("first_name", "username", "language_code",
                                             "last_name"))}),
        ("POST", r"users/(\d+)/message", lambda c, r: c.inject_message(
            _user(r), token=r.token, **r.pick(*MESSAGE_FIELDS))),
        ("POST", r"users/(\d+)/press", lambda c, r: c.press(
            _user(r), token=r.token, **r.pick("message_id", "data", "button_text"))),
        ("POST", r"users/(\d+)/block", lambda c, r: c.set_blocked(_user(r), True, r.token)),
        ("POST", r"users/(\d+)/unblock", lambda c, r: c.set_blocked(_user(r), False, r.token)),
        ("POST", r"users/(\d+)/deactivate", lambda c, r: c.set_deactivated(
            _user(r), bool(r.body.get("deactivated", True)), r.token)),
        ("POST", r"users/(\d+)/pre_checkout", lambda c, r: c.pre_checkout(
            _user(r), token=r.token, **r.pick("invoice_message_id", *PAYMENT_FIELDS))),
        ("POST", r"users/(\d+)/pay", lambda c, r: c.pay(
            _user(r), token=r.token,
            **r.pick("invoice_message_id", "pre_checkout_query_id", *PAYMENT_FIELDS))),
        ("POST", r"users/(\d+)/checkout", lambda c, r: c.checkout(
            _user(r), token=r.token, timeout=_seconds(r.body.get("timeout")),
            **r.pick("invoice_message_id", *PAYMENT_FIELDS))),
        ("POST", r"users/(\d+)/replay_payment", lambda c, r: c.replay_payment(
            _user(r), str(r.body.get("telegram_payment_charge_id") or ""), r.token)),
        ("GET", r"pre_checkout/([\w-]+)", lambda c, r: c.pre_checkout_answer(
            r.groups[0], r.token)),
        ("GET", "payments", lambda c, r: {"payments": c.payments(r.token)}),
        ("GET", "faults", lambda c, r: {"faults": c.faults()}),
        ("POST", "faults", _fault),
        ("DELETE", "faults", lambda c, r: c.clear_faults()),
        ("GET", "limits", lambda c, r: c.set_limits()),
        ("POST", "limits", lambda c, r: c.set_limits(
            **r.pick("global_rate", "chat_rate", "chat_burst"))),
        ("GET", "chats", lambda c, r: {"chats": c.chats(r.token)}),
        ("GET", r"chats/(-?\d+)/transcript", _transcript),
        ("GET", "stats", lambda c, r: c.stats()),
        ("POST", "stats/reset", lambda c, r: c.reset_stats()),
        ("GET", "sends", _sends),
        ("GET", "commands", lambda c, r: {"commands": c.commands(r.token)}),
    ]
]


def route_control(
    control: Control, method: str, path: str, query: str, body: bytes
) -> tuple[int, Any]:
    """Dispatch one control request; raises :class:`ControlError` for refused ones."""
    path = path.rstrip("/")
    matched_path = False
    for route_method, pattern, handler in ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        matched_path = True
        if route_method == method:
            request = Request(match.groups(), dict(parse_qsl(query)), _json_body(body))
            return 200, handler(control, request)
    if matched_path:
        raise ControlError(405, f"{method} is not allowed on {path}")
    raise ControlError(404, f"no control route {path}")


def _json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise ControlError(400, "body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ControlError(400, "body must be a JSON object")
    return data


def is_page_path(path: str) -> bool:
    """Whether ``path`` belongs to the chat page (``/``, ``/index.html``, ``/static/...``)."""
    return path in PAGE_PATHS or path.startswith(STATIC_PREFIX)


def page_asset(path: str, static_dir: Path = STATIC_DIR) -> tuple[bytes, str] | None:
    """Bytes and content type of a chat page file, or None when there is no such file.

    Only plain file names directly inside ``static_dir`` with a known type are served.
    """
    name = PAGE_PATHS.get(path)
    if name is None and path.startswith(STATIC_PREFIX):
        name = path[len(STATIC_PREFIX):]
    if not name or not ASSET_NAME.fullmatch(name):
        return None
    content_type = ASSET_TYPES.get(Path(name).suffix)
    file = static_dir / name
    if content_type is None or not file.is_file():
        return None
    return file.read_bytes(), content_type
