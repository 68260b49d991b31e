"""What every emulator's HTTP server shares: keep-alive connections it can wake on shutdown,
connections a fault resets instead of closing cleanly, and quiet logging."""

from __future__ import annotations

import logging
import socket
import threading
from abc import ABC, abstractmethod
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("habitbot.sandbox.http")


class TrackingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._reset: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, connection: socket.socket, active: bool) -> None:
        with self._connections_lock:
            if active:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def mark_reset(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._reset.add(connection)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            reset = request in self._reset
            self._reset.discard(request)
        if reset:
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every handler blocked on a connection by shutting its socket down."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)


class TrackingHandler(BaseHTTPRequestHandler, ABC):
    """One keep-alive connection; subclasses implement `dispatch()`."""

    protocol_version = "HTTP/1.1"
    server: TrackingHTTPServer

    def setup(self) -> None:
        super().setup()
        with suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def do_GET(self) -> None:
        self.dispatch()

    def do_POST(self) -> None:
        self.dispatch()

    def do_DELETE(self) -> None:
        self.dispatch()

    @abstractmethod
    def dispatch(self) -> None:
        """Read the request and answer it (each emulator its own routes)."""
