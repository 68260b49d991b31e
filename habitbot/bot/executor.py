"""Handle updates on a thread pool while keeping each chat's updates in order.

Updates of one chat run one after another (a user's second tap never overtakes the first);
different chats run in parallel, taking turns: after each update a chat with more waiting goes
to the back of the line, so a busy chat never keeps a thread while other chats wait. A chat
holds at most `max_queued` updates waiting behind the one in hand: `submit` refuses more (the
caller drops and counts them), so one chat cannot pile up unbounded work. Urgent tasks
(pre-checkout queries, which Telegram waits only 10 s for) run on a pool of their own, never
behind other chats' updates. `drain()` waits for everything in hand — a clean stop.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUED = 20
URGENT_WORKERS = 2


class ChatSerialExecutor:
    def __init__(self, workers: int = 4, max_queued: int = DEFAULT_MAX_QUEUED):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="update")
        self._urgent = ThreadPoolExecutor(max_workers=URGENT_WORKERS,
                                          thread_name_prefix="urgent")
        self.max_queued = max_queued
        self._pending: dict[object, deque[Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_hand = 0

    def submit(self, chat_id: object, task: Callable[[], None], *, force: bool = False,
               urgent: bool = False) -> bool:
        """Queue `task` behind the chat's earlier ones; False (nothing queued) when the chat
        already has `max_queued` waiting, unless `force`."""
        with self._lock:
            queue = self._pending.get(chat_id)
            if queue is not None:  # this chat is busy: run after what is already queued
                if len(queue) >= self.max_queued and not force:
                    return False
                self._in_hand += 1
                queue.append(task)
                return True
            self._in_hand += 1
            self._pending[chat_id] = deque()
        pool = self._urgent if urgent else self._pool
        pool.submit(self._run_chat, pool, chat_id, task)
        return True

    def queued(self, chat_id: object) -> int:
        """Updates of the chat waiting behind the one in hand."""
        with self._lock:
            queue = self._pending.get(chat_id)
            return len(queue) if queue is not None else 0

    def _run_chat(self, pool: ThreadPoolExecutor, chat_id: object,
                  task: Callable[[], None]) -> None:
        while True:
            try:
                task()
            except Exception:
                log.exception("update task crashed", extra={"chat_id": chat_id})
            with self._lock:
                self._in_hand -= 1
                queue = self._pending[chat_id]
                if not queue:
                    del self._pending[chat_id]
                    self._idle.notify_all()
                    return
                task = queue.popleft()
            try:  # the chat's next update waits its turn behind the other chats'
                pool.submit(self._run_chat, pool, chat_id, task)
                return
            except RuntimeError:  # shutting down: finish the chat here
                continue

    @property
    def in_hand(self) -> int:
        with self._lock:
            return self._in_hand

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted update is handled; False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._in_hand == 0, timeout)

    def shutdown(self, timeout: float = 30) -> bool:
        """Drain (up to `timeout`) and stop the threads; False when updates were still in
        hand at the timeout (their threads are left to finish on their own)."""
        drained = self.drain(timeout=timeout)
        self._pool.shutdown(wait=drained)
        self._urgent.shutdown(wait=drained)
        return drained
