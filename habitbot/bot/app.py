"""The polling bot process.

A plain loop around `getUpdates` rather than `infinity_polling`, so that we control what
happens between polls: a heartbeat in Redis after each successful poll (read by `/health`), a
revoked token detected, alerted and retried slowly instead of spinning, network errors and
Telegram outages retried with backoff until the API is back, and a clean stop on SIGTERM/SIGINT
(which ends a long poll in progress at once) after the updates in hand are handled — and
confirmed to Telegram with one last getUpdates, so they are not delivered again after the
restart.

An update is confirmed only once it and every update before it is handled, and handled once
across restarts (`bot.intake`, `services.updates`). While updates are in hand Telegram returns
them at once to every getUpdates (the offset has not passed them): a batch of nothing new waits
for one of them to finish (at most `REPOLL_WAIT`) instead of asking again in a tight loop.

Two threads work beside the loop: one delivers the replies kept while Telegram was unreachable
(`telegram.deferred`), one sets the command menu — retried with backoff until Telegram takes
it, so a Telegram outage at start never keeps the bot from polling.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from types import FrameType

import redis
from telebot import TeleBot
from telebot.apihelper import ApiTelegramException

from habitbot.bot.dispatcher import ALLOWED_UPDATES, Dispatcher
from habitbot.bot.executor import ChatSerialExecutor
from habitbot.bot.handlers.common import command_menu
from habitbot.bot.intake import Intake
from habitbot.bot.throttle import InboundThrottle, ThrottleLimits
from habitbot.i18n import LANGUAGES, Translator
from habitbot.runtime import Runtime, build_runtime
from habitbot.services import heartbeat, timezones
from habitbot.services.health import HealthChecker
from habitbot.services.monitor import HealthMonitor
from habitbot.telegram import telebot_bridge
from habitbot.telegram.deferred import DeferredReplies
from habitbot.telegram.errors import TelegramError

log = logging.getLogger(__name__)

POLL_TIMEOUT = 20
UNAUTHORIZED_RETRY = 60.0
BACKOFF_CAP = 30.0
COMMANDS_RETRY_BASE = 5.0
COMMANDS_RETRY_CAP = 300.0
REPOLL_WAIT = 0.2
STOP_DRAIN_SECONDS = 30.0


class PollInterrupted(Exception):
    """A stop signal arrived while the loop waited in the long poll: it ends the wait at
    once. Whatever that poll would have returned stays with Telegram (nothing was taken or
    confirmed), so nothing is lost."""


class PollingBot:
    def __init__(self, runtime: Runtime, poll_timeout: int = POLL_TIMEOUT):
        self.runtime = runtime
        self.poll_timeout = poll_timeout
        self.stopping = threading.Event()
        self.replies = DeferredReplies(runtime.sender, runtime.redis)
        telebot_bridge.install(runtime.sender, self.replies)
        self.bot = TeleBot(runtime.settings.bot_token, threaded=False, parse_mode=None)
        self.dispatcher = Dispatcher(runtime, self.bot)
        settings = runtime.settings
        self.executor = ChatSerialExecutor(workers=4, max_queued=settings.chat_queue_limit)
        throttle = InboundThrottle(runtime.redis, ThrottleLimits(settings.user_update_rate,
                                                                 settings.user_update_burst))
        self.intake = Intake(runtime, self.bot, self.dispatcher, self.executor, throttle)
        self.long_polling = False  # inside getUpdates, where a stop signal may interrupt
        self._failures = 0
        self._menus_set: set[str] = set()

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def setup_commands(self) -> bool:
        """Set the command menu of each language not set yet; True once every one is set. A
        menu Telegram refuses (400) is logged and not tried again: the same call would be
        refused again."""
        for language in LANGUAGES:
            if language in self._menus_set:
                continue
            menu = command_menu(Translator(language).gettext)
            params: dict[str, object] = {"commands": menu}
            if language != "ru":
                params["language_code"] = language
            try:
                self.runtime.sender.call("setMyCommands", params)
            except TelegramError as exc:
                if exc.unreachable or exc.rate_limited or exc.unauthorized:
                    log.warning("setMyCommands failed", extra={"language": language,
                                                               "error": str(exc)})
                    continue
                log.error("setMyCommands refused", extra={"language": language,
                                                          "error": str(exc)})
            self._menus_set.add(language)
        return len(self._menus_set) == len(LANGUAGES)

    def register_commands(self) -> None:
        """`setup_commands` until it succeeds, with backoff (run beside the polling loop)."""
        attempt = 0
        while not self.stopping.is_set():
            try:
                if self.setup_commands():
                    log.info("command menu set", extra={"attempts": attempt + 1})
                    return
            except Exception:
                log.exception("command menu not set")
            attempt += 1
            delay = min(COMMANDS_RETRY_CAP, COMMANDS_RETRY_BASE * 2 ** (attempt - 1))
            delay *= random.uniform(0.5, 1.0)
            log.warning("command menu not set yet, retrying", extra={"attempt": attempt,
                                                                     "delay": round(delay, 1)})
            self.stopping.wait(delay)

    def check_token(self) -> bool:
        """getMe once at start: proves the token and the API work before the first long poll."""
        try:
            me = self.bot.get_me()
        except Exception as exc:
            self.stopping.wait(self._on_poll_error(exc))
            return False
        self._beat()
        self.dispatcher.bot_username = me.username
        log.info("connected to the Bot API", extra={"bot_username": me.username})
        return True

    @property
    def offset(self) -> int | None:
        """What the next getUpdates confirms: every update below it is handled."""
        return self.intake.window.offset

    def poll_once(self) -> int:
        """One long poll; returns the number of new updates taken (queued or dropped)."""
        self.long_polling = True
        try:
            updates = self.bot.get_updates(offset=self.offset, timeout=self.poll_timeout,
                                           allowed_updates=ALLOWED_UPDATES,
                                           long_polling_timeout=self.poll_timeout)
        finally:
            self.long_polling = False
        self._beat()
        self._failures = 0
        fresh = [u for u in updates if self.intake.window.take(u.update_id)]
        for update in fresh:
            self.intake.accept(update)
        if updates and not fresh:  # only updates in hand: wait for one to finish
            self.intake.window.wait_for_progress(REPOLL_WAIT)
        return len(fresh)

    def confirm_handled(self) -> bool:
        """Tell Telegram what is handled (a getUpdates with the offset and no wait), so that
        it is not delivered again after a restart; False when Telegram could not be told
        (those updates come again and are recognised as handled)."""
        offset = self.offset
        if offset is None:
            return True
        try:
            self.runtime.sender.call("getUpdates", {"offset": offset, "limit": 1,
                                                    "timeout": 0,
                                                    "allowed_updates": ALLOWED_UPDATES})
        except Exception as exc:
            log.warning("handled updates not confirmed to Telegram",
                        extra={"offset": offset, "error": str(exc)[:200]})
            return False
        log.info("handled updates confirmed", extra={"offset": offset,
                                                     "in_hand": self.intake.window.in_hand})
        return True

    def _beat(self) -> None:
        try:
            heartbeat.beat(self.runtime.redis, "bot")
        except redis.RedisError as exc:
            log.warning("heartbeat not written: redis unavailable",
                        extra={"error": type(exc).__name__})

    def _on_poll_error(self, exc: Exception) -> float:
        self._failures += 1
        if isinstance(exc, ApiTelegramException) and exc.error_code == 401:
            log.critical("Telegram rejected the bot token (401)")
            self.runtime.alerts.raise_alert("CRITICAL", "bot", "Telegram rejected BOT_TOKEN "
                                            "(401 Unauthorized): check the token",
                                            fingerprint="bot:unauthorized")
            return UNAUTHORIZED_RETRY
        if isinstance(exc, ApiTelegramException) and exc.error_code == 409:
            log.error("another getUpdates consumer is running for this token")
            return 5.0
        delay = min(BACKOFF_CAP, 0.5 * 2 ** min(self._failures, 8)) * random.uniform(0.5, 1.0)
        log.warning("polling failed, retrying", extra={"error": type(exc).__name__,
                                                        "failures": self._failures,
                                                        "delay": round(delay, 1)})
        return delay

    def run(self) -> None:
        self.runtime.guard.start()
        threading.Thread(target=timezones.preload, name="city-index", daemon=True).start()
        monitor = HealthMonitor(HealthChecker(self.runtime.engine, self.runtime.redis),
                                self.runtime.alerts).start()
        while not self.stopping.is_set() and not self.check_token():
            pass
        self.replies.start()
        threading.Thread(target=self.register_commands, name="command-menu",
                         daemon=True).start()
        log.info("Startup complete", extra={"degraded": self.runtime.guard.degraded})
        while not self.stopping.is_set():
            try:
                self.poll_once()
            except PollInterrupted:
                break
            except Exception as exc:
                self.stopping.wait(self._on_poll_error(exc))
        if not self.executor.shutdown(timeout=STOP_DRAIN_SECONDS):
            log.warning("stopping with updates still in hand: they are delivered again",
                        extra={"in_hand": self.intake.window.in_hand})
        self.confirm_handled()
        self.replies.stop()  # what still waits is delivered after the next start
        monitor.stop()
        log.info("bot stopped")


def main() -> int:
    runtime = build_runtime("bot", "bot")
    bot = PollingBot(runtime)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("stop requested", extra={"signal": signum})
        bot.stop()
        if bot.long_polling:  # do not wait out the long poll (up to POLL_TIMEOUT seconds)
            raise PollInterrupted

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        bot.run()
    finally:
        runtime.close()
    return 0
