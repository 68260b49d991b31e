"""A local Telegram Bot API emulator for tests, benchmarks and the sandbox.

Bots talk to it exactly as to api.telegram.org (``{url}/bot{token}/{method}``): long polling,
sending, editing, callbacks, commands, invoices and Stars, Telegram's error envelopes and
wording, and flood limits answered with 429 ``retry_after``. Tests play the user's side and
inject failures through the JSON control API under ``/control/`` (client:
``habitbot.sandbox.emulator_client``) or through the Python methods of
:class:`TelegramEmulator`.

Run it standalone::

    python -m habitbot.sandbox.telegram_emulator --host 127.0.0.1 --port 8081 \\
        --token 123456:SANDBOX --global-rate 30 --chat-rate 1
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from habitbot.sandbox.telegram_emulator_control import Control
from habitbot.sandbox.telegram_emulator_http import BotGateway, EmulatorHTTPServer
from habitbot.sandbox.telegram_emulator_state import World

DEFAULT_TOKEN = "123456:SANDBOX"
log = logging.getLogger("habitbot.sandbox.telegram_emulator")


class TelegramEmulator:
    """The emulator server; ``start()`` serves it from a daemon thread.

    ``auto_create_chats`` lets bots send to any positive chat id never seen before (benchmarks);
    ``callback_ttl`` / ``pre_checkout_ttl`` are the seconds after which a query is too old to
    answer; ``strict_html_entities`` also refuses ``&`` that starts no entity (Telegram keeps it
    as text); ``conflict_delay`` is how long repeated 409 conflicts are held back, like Telegram;
    ``fault_hold_max`` caps how long a ``timeout`` fault holds a request.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Sequence[str] = (DEFAULT_TOKEN,),
        global_rate: float = 30.0,
        chat_rate: float = 1.0,
        chat_burst: float = 3,
        bot_username: str = "habitbot_sandbox_bot",
        *,
        auto_create_chats: bool = True,
        callback_ttl: float = 15.0,
        pre_checkout_ttl: float = 10.0,
        strict_html_entities: bool = False,
        conflict_delay: float = 3.0,
        fault_hold_max: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self.world = World(
            tuple(tokens), bot_username, global_rate, chat_rate, chat_burst,
            auto_create_chats=auto_create_chats, callback_ttl=callback_ttl,
            pre_checkout_ttl=pre_checkout_ttl, strict_html_entities=strict_html_entities,
            conflict_delay=conflict_delay, fault_hold_max=fault_hold_max,
        )
        self.control = Control(self.world)
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> TelegramEmulator:
        if self._server is not None:
            return self
        self.world.stopping.clear()
        server = EmulatorHTTPServer((self.host, self.port), BotGateway(self.world), self.control)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name="telegram-emulator", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wake long polls and held requests, close every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        world = self.world
        world.stopping.set()
        with world.lock:
            world.notify()
        world.faults.clear()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TelegramEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.world.tokens

    def api_url(self, token: str | None = None) -> str:
        """Base URL of one bot's methods: ``{url}/bot{token}``."""
        return f"{self.url}/bot{token or self.world.tokens[0]}"

    # ------------------------------------------------------------ the user's side

    def add_user(self, user_id: int, first_name: str | None = None, **fields: Any) -> dict:
        return self.control.add_user(user_id, first_name, **fields)

    def inject_message(self, user_id: int, text: str | None = None, **fields: Any) -> dict:
        """The user writes ``text`` (or sends location/sticker/photo/voice/document)."""
        return self.control.inject_message(user_id, text, **fields)

    def press(self, user_id: int, message_id: int | None = None, data: str | None = None,
              **fields: Any) -> dict:
        return self.control.press(user_id, message_id, data, **fields)

    def block(self, user_id: int, token: str | None = None) -> dict:
        return self.control.set_blocked(user_id, True, token)

    def unblock(self, user_id: int, token: str | None = None) -> dict:
        return self.control.set_blocked(user_id, False, token)

    def pre_checkout(self, user_id: int, **fields: Any) -> dict:
        return self.control.pre_checkout(user_id, **fields)

    def pre_checkout_answer(self, query_id: str, token: str | None = None) -> dict:
        return self.control.pre_checkout_answer(query_id, token)

    def pay(self, user_id: int, **fields: Any) -> dict:
        return self.control.pay(user_id, **fields)

    def checkout(self, user_id: int, **fields: Any) -> dict:
        """Pre-checkout, the bot's answer within the deadline, then the payment if approved."""
        return self.control.checkout(user_id, **fields)

    def replay_payment(self, user_id: int, charge_id: str, token: str | None = None) -> dict:
        return self.control.replay_payment(user_id, charge_id, token)

    # ------------------------------------------------------------ inspection and steering

    def transcript(self, chat_id: int, **options: Any) -> dict:
        return self.control.transcript(chat_id, **options)

    def stats(self) -> dict:
        return self.control.stats()

    def reset_stats(self) -> dict:
        return self.control.reset_stats()

    def sends(self, since: float | None = None, chat_id: int | None = None) -> list[dict]:
        return self.control.sends(since, chat_id)

    def commands(self, token: str | None = None) -> list[dict]:
        return self.control.commands(token)

    def payments(self, token: str | None = None) -> list[dict]:
        return self.control.payments(token)

    def bots(self) -> list[dict]:
        return self.control.bots()

    def add_fault(self, mode: str, **options: Any) -> dict:
        """Inject a fault: ``5xx``, ``timeout``, ``outage``, ``401`` or ``429``."""
        return self.control.add_fault(mode, **options)

    def clear_faults(self) -> dict:
        return self.control.clear_faults()

    def set_limits(self, global_rate: float | None = None, chat_rate: float | None = None,
                   chat_burst: float | None = None) -> dict:
        return self.control.set_limits(global_rate, chat_rate, chat_burst)

    def reset(self) -> dict:
        return self.control.reset()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m habitbot.sandbox.telegram_emulator",
        description="Local Telegram Bot API emulator",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", action="append", dest="tokens",
                        help="bot token to accept (repeatable)")
    parser.add_argument("--bot-username", default="habitbot_sandbox_bot")
    parser.add_argument("--global-rate", type=float, default=30.0)
    parser.add_argument("--chat-rate", type=float, default=1.0)
    parser.add_argument("--chat-burst", type=float, default=3.0)
    parser.add_argument("--no-auto-create-chats", action="store_true",
                        help="answer 'chat not found' for users never registered")
    parser.add_argument("--callback-ttl", type=float, default=15.0)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; returns the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    emulator = TelegramEmulator(
        args.host, args.port, tokens=tuple(args.tokens or [DEFAULT_TOKEN]),
        global_rate=args.global_rate, chat_rate=args.chat_rate, chat_burst=args.chat_burst,
        bot_username=args.bot_username, auto_create_chats=not args.no_auto_create_chats,
        callback_ttl=args.callback_ttl,
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    try:
        emulator.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        bot_ids = ", ".join(token.split(":", 1)[0] for token in emulator.tokens)
        log.info("Telegram Bot API emulator listening on %s (bot ids: %s)", emulator.url, bot_ids)
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("Telegram Bot API emulator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
