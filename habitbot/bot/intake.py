"""What happens to an update between getUpdates and its handler: confirmed to Telegram only
once handled, handled once across restarts, throttled per user, bounded per chat.

- `Watermark`: the updates fetched and not yet handled. The polling loop asks Telegram for
  updates from the lowest of them (the offset confirms everything below it), so an update is
  confirmed only once it and every update before it is handled; a crash or SIGKILL leaves the
  unhandled ones with Telegram, which delivers them again. The updates still in hand come
  back in the next getUpdates as well: the watermark knows them and they are not queued
  twice. At most one getUpdates batch (100) is in hand, so a chat holding the watermark back
  holds the bot back only while 100 updates wait — which the per-chat bound (`CHAT_QUEUE_LIMIT`)
  and the throttle make slow handlers' business only.
- `Intake.accept`: the per-user throttle (`bot.throttle`; a flood is dropped, told to slow
  down once and counted), then the chat's bounded queue (`bot.executor`; past the bound the
  update is dropped and counted). Payment updates are never dropped, and a pre-checkout
  query runs on the executor's urgent threads (Telegram waits 10 s for its answer). A dropped
  update counts as handled for the watermark and is written nowhere else: a flood writes
  nothing to the database.
- In the update's thread the update is claimed in `services.updates` before the handler runs
  and marked handled after it (see there what an update delivered again does). With the
  database unavailable the claim cannot be written: the update is handled anyway (the
  handlers answer in their limited mode and cannot change the database either), without a
  record, and claims are not tried again for `CLAIM_RETRY_SECONDS` so that every update does
  not wait out a connect timeout twice.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial

from sqlalchemy.exc import SQLAlchemyError
from telebot import TeleBot, types

from habitbot import metrics
from habitbot.bot.dispatcher import Dispatcher, chat_of
from habitbot.bot.executor import ChatSerialExecutor
from habitbot.bot.throttle import ALLOW, DROP_AND_NOTIFY, InboundThrottle
from habitbot.i18n import N_, Translator, normalise_language
from habitbot.runtime import Runtime
from habitbot.services import updates
from habitbot.services.users import load_user

log = logging.getLogger(__name__)

CLAIM_RETRY_SECONDS = 5.0
PAYMENT_KINDS = frozenset({"successful_payment", "pre_checkout_query"})
SLOW_DOWN = N_("You are sending messages too fast. Please wait a few seconds: messages sent "
               "meanwhile are not answered.")


def kind_of(update: types.Update) -> str:
    if update.message:
        return "successful_payment" if update.message.successful_payment else "message"
    for kind in ("callback_query", "my_chat_member", "pre_checkout_query"):
        if getattr(update, kind, None):
            return kind
    return "other"


def user_of(update: types.Update) -> types.User | None:
    if update.message:
        return update.message.from_user
    if update.callback_query:
        return update.callback_query.from_user
    return None


class Watermark:
    """Update ids fetched and not handled yet; `offset` is what the next getUpdates sends."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open: set[int] = set()
        self._next: int | None = None  # one past the highest update id taken
        self._progress = 0

    @property
    def offset(self) -> int | None:
        with self._changed:
            return min(self._open) if self._open else self._next

    @property
    def in_hand(self) -> int:
        with self._changed:
            return len(self._open)

    def take(self, update_id: int) -> bool:
        """True for an update not seen before; False for one in hand or handled (Telegram
        returns those until the offset passes them)."""
        with self._changed:
            if update_id in self._open or (self._next is not None and update_id < self._next):
                return False
            self._open.add(update_id)
            self._next = update_id + 1
            return True

    def done(self, update_id: int) -> None:
        with self._changed:
            self._open.discard(update_id)
            self._progress += 1
            self._changed.notify_all()

    def wait_for_progress(self, timeout: float) -> None:
        """Until some update in hand is done (or `timeout`)."""
        with self._changed:
            seen = self._progress
            self._changed.wait_for(lambda: self._progress != seen or not self._open, timeout)


class Intake:
    def __init__(self, runtime: Runtime, bot: TeleBot, dispatcher: Dispatcher,
                 executor: ChatSerialExecutor, throttle: InboundThrottle):
        self.runtime = runtime
        self.bot = bot
        self.dispatcher = dispatcher
        self.executor = executor
        self.throttle = throttle
        self.window = Watermark()
        self.bot_id = updates.bot_id_of(runtime.settings.bot_token)
        self._claims_off_until = 0.0

    # -- the polling thread ----------------------------------------------------------------
    def accept(self, update: types.Update) -> None:
        """Queue an update taken by the watermark, or drop it (throttled, queue full)."""
        kind = kind_of(update)
        user = user_of(update)
        payment = kind in PAYMENT_KINDS
        if user is not None and not payment:
            verdict = self.throttle.check(user.id)
            if verdict != ALLOW:
                self._drop(update, kind, "throttled")
                if verdict == DROP_AND_NOTIFY:
                    self.executor.submit(chat_of(update), partial(self._slow_down, update),
                                         force=True)
                return
        queued = self.executor.submit(chat_of(update), partial(self._run, update, kind),
                                      force=payment, urgent=kind == "pre_checkout_query")
        if not queued:
            self._drop(update, kind, "queue_full")

    def _drop(self, update: types.Update, kind: str, reason: str) -> None:
        self.window.done(update.update_id)
        user = user_of(update)
        log.info("update dropped", extra={"update_id": update.update_id, "kind": kind,
                                          "reason": reason,
                                          "user_id": user.id if user else None})
        metrics.incr(self.runtime.redis, "habitbot_updates_dropped_total", reason=reason)

    # -- the update's thread ---------------------------------------------------------------
    def _run(self, update: types.Update, kind: str) -> None:
        try:
            if self._claim(update, kind):
                self.dispatcher.handle(update)
                self._finish(update)
        finally:
            self.window.done(update.update_id)

    def _claims_available(self) -> bool:
        return not self.runtime.guard.degraded and time.monotonic() >= self._claims_off_until

    def _claim(self, update: types.Update, kind: str) -> bool:
        """Whether to run the handler."""
        if not self._claims_available():
            return True
        try:
            outcome = updates.claim(self.runtime.engine, self.bot_id, update.update_id, kind)
        except SQLAlchemyError as exc:
            self._claims_off_until = time.monotonic() + CLAIM_RETRY_SECONDS
            log.warning("update handled without a record: database unavailable",
                        extra={"update_id": update.update_id, "error": type(exc).__name__})
            return True
        if outcome == updates.NEW:
            return True
        if outcome == updates.INTERRUPTED and kind in updates.RERUN_KINDS:
            log.warning("payment update interrupted by a stop: handled again",
                        extra={"update_id": update.update_id, "kind": kind})
            return True
        reason = "duplicate" if outcome == updates.HANDLED else "interrupted"
        if outcome == updates.INTERRUPTED:
            log.warning("update interrupted by a stop: not handled again",
                        extra={"update_id": update.update_id, "kind": kind})
        metrics.incr(self.runtime.redis, "habitbot_updates_dropped_total", reason=reason)
        return False

    def _finish(self, update: types.Update) -> None:
        if not self._claims_available():
            return
        try:
            updates.finish(self.runtime.engine, self.bot_id, update.update_id)
        except SQLAlchemyError as exc:
            log.warning("handled update not recorded: database unavailable",
                        extra={"update_id": update.update_id, "error": type(exc).__name__})

    def _slow_down(self, update: types.Update) -> None:
        user = user_of(update)
        assert user is not None
        language = normalise_language(user.language_code)
        if not self.runtime.guard.degraded:
            try:
                stored = load_user(self.runtime.engine, user.id)
                language = stored.language if stored is not None else language
            except SQLAlchemyError:
                pass
        try:
            self.bot.send_message(user.id, Translator(language).gettext(SLOW_DOWN))
        except Exception as exc:
            log.info("slow-down notice not sent", extra={"user_id": user.id,
                                                         "error": str(exc)[:200]})
