"""One structured log format for every program: JSON lines on stderr.

Extra fields given with `log.info("…", extra={...})` become keys (update_id, user_id, job_id,
payment_id, …); inside an RQ job the job's id is added by itself. A filter scrubs anything
shaped like a bot token, a URL password or a card number from messages and fields, as the
last line of defence behind not logging them at all.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from datetime import UTC, datetime

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message",
                                                                                 "asctime"}
_SCRUBBERS = [
    (re.compile(r"\d{5,20}:[A-Za-z0-9_-]{30,}"), "<token>"),
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+@"), r"\1<hidden>@"),
    (re.compile(r"\b(?:\d[ -]?){13,19}\b"), "<card>"),
    # PostgreSQL's DETAIL repeats the values of a refused row or key: users' texts, e-mails.
    (re.compile(r"(Failing row contains \().*(\)\.?)$", re.MULTILINE), r"\1<hidden>\2"),
    (re.compile(r"(Key \([^)]*\)=\().*?(\) (?:already exists|is not present|is still))"),
     r"\1<hidden>\2"),
]


def scrub(value: str) -> str:
    for pattern, replacement in _SCRUBBERS:
        value = pattern.sub(replacement, value)
    return value


class JsonFormatter(logging.Formatter):
    def __init__(self, program: str):
        super().__init__()
        self.program = program

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "program": self.program,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = scrub(value) if isinstance(value, str) else value
        if "job_id" not in payload:
            job_id = _current_job_id()
            if job_id is not None:
                payload["job_id"] = job_id
        if record.exc_info:
            payload["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(payload, ensure_ascii=False, default=str)


def _current_job_id() -> str | None:
    """The RQ job this line was written in, in a worker's work horse (None elsewhere)."""
    rq = sys.modules.get("rq")
    if rq is None:
        return None
    try:
        job = rq.get_current_job()
    except Exception:  # never let a log line fail
        return None
    return job.id if job is not None else None


def setup_logging(program: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(program))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "TeleBot", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if program != "cli":  # the schema check reads the revision every minute: not news
        logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)


class Throttled:
    """A log line that repeats (one per refused request, say) written at most once per
    `interval` seconds per key in this process; the next line says how many were left out
    (`repeated`), so a flood of bad requests costs a few lines a minute, not one each."""

    _all: list[Throttled] = []

    def __init__(self, logger: logging.Logger, interval: float = 60.0, max_keys: int = 1000):
        Throttled._all.append(self)
        self._log = logger
        self._interval = interval
        self._max_keys = max_keys
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, message: str, **extra: object) -> bool:
        """Logs `message` unless `key` was logged in the last interval; True when written."""
        now = time.monotonic()
        with self._lock:
            written_at, left_out = self._last.get(key, (float("-inf"), 0))
            if now - written_at < self._interval:
                self._last[key] = (written_at, left_out + 1)
                return False
            if key not in self._last and len(self._last) >= self._max_keys:
                self._last.clear()  # bounded: many keys means a line each anyway
            self._last[key] = (now, 0)
        self._log.log(level, message, extra={**extra, "repeated": left_out})
        return True

    @classmethod
    def reset_all(cls) -> None:
        """Forget what was logged (tests: each starts with a quiet slate)."""
        for throttled in cls._all:
            with throttled._lock:
                throttled._last.clear()
