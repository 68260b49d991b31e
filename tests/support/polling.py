"""Waiting in tests: poll a condition until it holds, with a deadline (never a bare sleep)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition",
               interval: float = 0.05) -> Any:
    """The predicate's first truthy value; AssertionError when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        pause.wait(min(interval, max(0.0, deadline - time.monotonic())))
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
