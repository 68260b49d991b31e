"""Handle updates on a thread pool while keeping each chat's updates in order.

Updates of one chat run one after another (a user's second tap never overtakes the first);
different chats run in parallel. `drain()` waits for everything in hand — a clean stop.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class ChatSerialExecutor:
    def __init__(self, workers: int = 4):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="update")
        self._pending: dict[object, deque[Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_hand = 0

    def submit(self, chat_id: object, task: Callable[[], None]) -> None:
        with self._lock:
            self._in_hand += 1
            queue = self._pending.get(chat_id)
            if queue is not None:  # this chat is busy: run after what is already queued
                queue.append(task)
                return
            self._pending[chat_id] = deque()
        self._pool.submit(self._run_chat, chat_id, task)

    def _run_chat(self, chat_id: object, task: Callable[[], None]) -> None:
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

    @property
    def in_hand(self) -> int:
        with self._lock:
            return self._in_hand

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted update is handled; False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._in_hand == 0, timeout)

    def shutdown(self) -> None:
        self.drain(timeout=30)
        self._pool.shutdown(wait=True)
