"""The runtime of the current process for jobs.

RQ forks a work horse per job: a database engine must never cross a fork, so the runtime is
built per process id on first use.
"""

from __future__ import annotations

import os

from habitbot.runtime import Runtime, build_runtime
from habitbot.services.guard import SchemaGuard

_runtime: Runtime | None = None
_pid: int | None = None
# Set by the worker's parent process; a forked horse inherits its latest state.
parent_guard: SchemaGuard | None = None


def parent_degraded() -> bool:
    return parent_guard is not None and parent_guard.degraded


def job_runtime() -> Runtime:
    global _runtime, _pid
    if _runtime is None or _pid != os.getpid():
        _runtime = build_runtime("worker", "worker", configure_logging=False)
        _pid = os.getpid()
    return _runtime
