"""HTTP side of the Telegram Bot API emulator: request parsing, faults on the wire, serving.

``/bot<token>/<method>`` answers like api.telegram.org; ``/file/bot<token>/<path>`` serves
stored uploads; ``/control/...`` is the JSON control API (see ``telegram_emulator_routes``);
``/`` and ``/static/...`` serve the sandbox chat page.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from contextlib import suppress
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from habitbot.sandbox.http_base import TrackingHandler, TrackingHTTPServer
from habitbot.sandbox.telegram_emulator_api import CoreMethods, Params, Upload, WithDescription
from habitbot.sandbox.telegram_emulator_api_extra import ExtraMethods
from habitbot.sandbox.telegram_emulator_control import Control, ControlError
from habitbot.sandbox.telegram_emulator_limits import STATUS_TEXT, Fault
from habitbot.sandbox.telegram_emulator_routes import (
    PAGE_HEADERS,
    is_page_path,
    page_asset,
    route_control,
)
from habitbot.sandbox.telegram_emulator_state import World
from habitbot.sandbox.telegram_emulator_text import ApiError, bad_request

log = logging.getLogger("habitbot.sandbox.telegram_emulator")

MAX_BODY_BYTES = 64 << 20


class BotGateway:
    """Turns one Bot API call into either an envelope to answer or a fault to act out."""

    def __init__(self, world: World) -> None:
        self.world = world
        core = CoreMethods(world)
        registry = {**core.methods(), **ExtraMethods(world, core).methods()}
        self.methods = {name.lower(): (name, method) for name, method in registry.items()}

    def call(
        self, token: str, method: str, query: str, content_type: str, body: bytes
    ) -> tuple[int, dict[str, Any]] | Fault:
        key = method.lower()
        name = self.methods.get(key, (method, None))[0]
        stats = self.world.stats
        stats.request(name)
        fault = self.world.faults.take(key)
        if fault is not None:
            stats.fault(fault.mode)
            if fault.mode in ("5xx", "401", "429"):
                stats.error(fault.status)
            return fault
        try:
            return 200, self._ok(self._invoke(token, key, query, content_type, body))
        except ApiError as exc:
            stats.error(exc.code)
            return exc.code, exc.envelope()

    def _invoke(self, token: str, key: str, query: str, content_type: str, body: bytes) -> Any:
        bot = self.world.bots.get(token)
        if bot is None:
            raise ApiError(401, "Unauthorized")
        entry = self.methods.get(key)
        if entry is None:
            raise ApiError(404, "Not Found")
        return entry[1](bot, parse_params(query, content_type, body))

    @staticmethod
    def _ok(result: Any) -> dict[str, Any]:
        if isinstance(result, WithDescription):
            return {"ok": True, "result": result.result, "description": result.description}
        return {"ok": True, "result": result}


def fault_envelope(fault: Fault) -> tuple[int, dict[str, Any]]:
    """Status and body answered for a ``5xx``, ``401`` or ``429`` fault."""
    if fault.mode == "401":
        return 401, ApiError(401, "Unauthorized").envelope()
    if fault.mode == "429":
        seconds = fault.retry_after
        return 429, ApiError(429, f"Too Many Requests: retry after {seconds}", seconds).envelope()
    description = STATUS_TEXT.get(fault.status, "Internal Server Error")
    return fault.status, {"ok": False, "error_code": fault.status, "description": description}


# ---------------------------------------------------------------- request bodies


def parse_params(query: str, content_type: str, body: bytes) -> Params:
    """Merge query-string and body parameters like the Bot API server does."""
    values: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    files: dict[str, Upload] = {}
    kind, options = _content_type(content_type)
    if body and kind == "application/json":
        try:
            data = json.loads(body)
        except ValueError:
            raise bad_request("can't parse JSON object") from None
        if not isinstance(data, dict):
            raise bad_request("can't parse JSON object")
        values.update(data)
    elif body and kind == "application/x-www-form-urlencoded":
        values.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    elif body and kind == "multipart/form-data":
        fields, files = parse_multipart(body, options.get("boundary", ""))
        values.update(fields)
    return Params(values, files)


def _content_type(header: str) -> tuple[str, dict[str, str]]:
    message = Message()
    message["content-type"] = header or "application/octet-stream"
    options = {k.lower(): str(v) for k, v in (message.get_params() or [])[1:]}
    return message.get_content_type(), options


def parse_multipart(body: bytes, boundary: str) -> tuple[dict[str, str], dict[str, Upload]]:
    """Split a multipart/form-data body into text fields and uploaded files."""
    if not boundary:
        raise bad_request("can't parse multipart/form-data body")
    fields: dict[str, str] = {}
    files: dict[str, Upload] = {}
    for chunk in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if chunk.startswith(b"--"):
            break
        head, separator, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not separator:
            continue
        headers = _part_headers(head)
        name, filename = _disposition(headers.get("content-disposition", ""))
        if name is None:
            continue
        data = data.removesuffix(b"\r\n")
        if filename is None:
            fields[name] = data.decode("utf-8", "replace")
        else:
            files[name] = Upload(filename, headers.get("content-type"), data)
    return fields, files


def _part_headers(head: bytes) -> dict[str, str]:
    headers = {}
    for line in head.decode("utf-8", "surrogateescape").split("\r\n"):
        key, separator, value = line.partition(":")
        if separator:
            headers[key.strip().lower()] = value.strip()
    return headers


def _disposition(value: str) -> tuple[str | None, str | None]:
    message = Message()
    message["content-disposition"] = value
    name = message.get_param("name", header="content-disposition")
    filename = message.get_filename()
    if isinstance(name, tuple):
        name = name[2]
    return (str(name) if name is not None else None), filename


# ---------------------------------------------------------------- server


class EmulatorHTTPServer(TrackingHTTPServer):
    """Threaded server that tracks its connections so that stopping closes them all."""
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], gateway: BotGateway, control: Control) -> None:
        self.gateway = gateway
        self.control = control
        self.world = gateway.world
        super().__init__(address, EmulatorHandler)


class EmulatorHandler(TrackingHandler):
    """One HTTP/1.1 connection (keep-alive) of a bot, a test or the chat page."""

    server: EmulatorHTTPServer
    timeout = 300

    def do_OPTIONS(self) -> None:
        self.send_body(204, b"", "text/plain")

    def dispatch(self) -> None:
        body = self.read_body()
        if body is None:
            return
        url = urlsplit(self.path)
        path = unquote(url.path)
        if path.startswith("/bot"):
            self.bot_api(path[4:], url.query, body)
        elif path.startswith("/file/bot"):
            self.download(path[len("/file/bot"):])
        elif path == "/control" or path.startswith("/control/"):
            self.control(path, url.query, body)
        elif is_page_path(path):
            self.page(path)
        else:
            self.send_json(404, {"ok": False, "error_code": 404, "description": "Not Found"})

    def read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self.read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            status = 413 if length > 0 else 400
            description = "Request Entity Too Large" if status == 413 else "Bad Request"
            self.send_json(status, {"ok": False, "error_code": status, "description": description})
            return None
        return self.rfile.read(length) if length else b""

    def read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            except ValueError:
                size = -1
            total += max(size, 0)
            if size < 0 or total > MAX_BODY_BYTES:
                self.close_connection = True
                self.send_json(400, {"ok": False, "error_code": 400, "description": "Bad Request"})
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def bot_api(self, rest: str, query: str, body: bytes) -> None:
        token, _, method = rest.partition("/")
        content_type = self.headers.get("Content-Type", "")
        outcome = self.server.gateway.call(token, method.strip("/"), query, content_type, body)
        if not isinstance(outcome, Fault):
            self.send_json(*outcome)
        elif outcome.mode == "outage":
            self.drop_connection()
        elif outcome.mode == "timeout":
            outcome.released.wait(outcome.hold_seconds(self.server.world.fault_hold_max))
            self.close_connection = True
        else:
            self.send_json(*fault_envelope(outcome))

    def drop_connection(self) -> None:
        """Close without answering, with a TCP reset (SO_LINGER 0)."""
        with suppress(OSError):
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        self.server.mark_reset(self.connection)
        self.close_connection = True

    def download(self, rest: str) -> None:
        token, _, file_path = rest.partition("/")
        world = self.server.world
        bot = world.bots.get(token)
        with world.lock:
            records = list(bot.files.values()) if bot else []
        for record in records:
            if record.file_path == file_path and record.content is not None:
                self.send_body(200, record.content, record.mime_type or "application/octet-stream")
                return
        self.send_json(404, {"ok": False, "error_code": 404, "description": "Not Found"})

    def control(self, path: str, query: str, body: bytes) -> None:
        try:
            status, payload = route_control(self.server.control, self.command, path, query, body)
        except ControlError as exc:
            status, payload = exc.status, {"ok": False, "error": exc.message}
        self.send_json(status, payload)

    def page(self, path: str) -> None:
        if self.command != "GET":
            self.send_json(405, {"ok": False, "error_code": 405,
                                 "description": "Method Not Allowed"})
            return
        asset = page_asset(path)
        if asset is None:
            self.send_json(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        self.send_body(200, asset[0], asset[1], PAGE_HEADERS)

    def send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_body(status, data, "application/json")

    def send_body(
        self, status: int, data: bytes, content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Content-Type")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        with suppress(OSError):
            self.wfile.write(data)
