"""HTTP plumbing shared by the YooKassa and Crypto Pay emulators.

The server (stdlib ``ThreadingHTTPServer``, keep-alive, every connection closed on stop) hands
each parsed :class:`HttpRequest` to its emulator and writes back the :class:`HttpResponse`, or
acts out the injected fault it carries: ``timeout`` holds the request and closes without an
answer, ``outage`` resets the connection. Also the small response helpers and the HTML of the
pay pages.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from email.message import Message
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from habitbot.sandbox.http_base import TrackingHandler, TrackingHTTPServer
from habitbot.sandbox.payments_emulator_faults import Fault

if TYPE_CHECKING:
    from habitbot.sandbox.payments_emulator_base import EmulatorBase

log = logging.getLogger("habitbot.sandbox.payments_emulator")

MAX_BODY_BYTES = 1 << 20


# ---------------------------------------------------------------- requests and responses


@dataclass
class HttpRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    client_ip: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def content_type(self) -> str:
        raw = self.headers.get("Content-Type")
        if not raw:
            return ""
        message = Message()
        message["content-type"] = raw
        return message.get_content_type()


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    fault: Fault | None = None


def json_response(status: int, payload: Any) -> HttpResponse:
    data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return HttpResponse(status, data)


def html_response(status: int, page: str) -> HttpResponse:
    return HttpResponse(status, page.encode("utf-8"), "text/html; charset=utf-8",
                        {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def proxy_error_page(status: int) -> HttpResponse:
    """What a load balancer in front of a provider answers on 502/503/504: HTML, not JSON."""
    reason = {502: "Bad Gateway", 503: "Service Temporarily Unavailable",
              504: "Gateway Time-out"}.get(status, "Error")
    page = (f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n")
    return HttpResponse(status, page.encode("ascii"), "text/html")


def form_fields(request: HttpRequest) -> dict[str, str]:
    """Fields of an HTML form post (or of a JSON object, for scripted clicks)."""
    if request.content_type == "application/json":
        with suppress(ValueError):
            data = json.loads(request.body or b"{}")
            if isinstance(data, dict):
                return {str(k): str(v) for k, v in data.items()}
        return {}
    return dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))


# ---------------------------------------------------------------- HTML pages


def render_page(title: str, rows: Sequence[tuple[str, str]], form_action: str | None = None,
                buttons: Sequence[tuple[str, str]] = (), message: str | None = None,
                extra_fields: str = "") -> str:
    """A tiny self-contained page: a table of facts and a form with one button per action."""
    lines = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    note = f'<p class="note">{escape(message)}</p>' if message else ""
    form = ""
    if form_action and buttons:
        clicks = "".join(f'<button type="submit" name="action" value="{escape(value)}">'
                         f"{escape(label)}</button> " for value, label in buttons)
        form = (f'<form method="post" action="{escape(form_action)}">{extra_fields}'
                f"<p>{clicks}</p></form>")
    return ("<!doctype html><html><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
            "th{text-align:left;padding-right:1em}button{font-size:1.2em;margin-right:1em}"
            ".note{font-weight:bold}</style></head><body>"
            f"<h1>{escape(title)}</h1>{note}<table>{lines}</table>{form}</body></html>")


# ---------------------------------------------------------------- serving


class PaymentsHTTPServer(TrackingHTTPServer):
    """Threaded server that tracks its connections so that stopping closes them all."""
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: EmulatorBase) -> None:
        self.emulator = emulator
        super().__init__(address, PaymentsHandler)


class PaymentsHandler(TrackingHandler):
    """One keep-alive connection of the app, a test or a browser."""

    server: PaymentsHTTPServer
    timeout = 120

    def do_PUT(self) -> None:
        self.dispatch()

    def dispatch(self) -> None:
        body = self.read_body()
        if body is None:
            return
        url = urlsplit(self.path)
        request = HttpRequest(self.command, unquote(url.path),
                              dict(parse_qsl(url.query, keep_blank_values=True)),
                              self.headers, body, self.client_address[0])
        try:
            response = self.server.emulator.handle(request)
        except Exception:
            log.exception("emulator failed on %s %s", self.command, url.path)
            response = json_response(500, {"error": "emulator bug, see its log"})
        fault = response.fault
        if fault is not None and fault.mode == "outage":
            self.drop_connection()
        elif fault is not None and fault.mode == "timeout":
            fault.released.wait(fault.hold_seconds(self.server.emulator.fault_hold_max))
            self.close_connection = True
        else:
            self.send(response)

    def read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            self.send(json_response(411, {"error": "chunked bodies are not supported"}))
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            status = 413 if length > 0 else 400
            self.send(json_response(status, {"error": "bad Content-Length"}))
            return None
        return self.rfile.read(length) if length else b""

    def drop_connection(self) -> None:
        """Close without answering, with a TCP reset (SO_LINGER 0)."""
        with suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.server.mark_reset(self.connection)
        self.close_connection = True

    def send(self, response: HttpResponse) -> None:
        self.send_response(response.status)
        if response.body or response.status not in (204, 304):
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        with suppress(OSError):
            self.wfile.write(response.body)
