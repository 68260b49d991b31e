"""The runtime that RQ jobs run in-process (SimpleWorker, or a job function called directly)
use: built from the test's settings and installed where `workers.context.job_runtime()` looks."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from rq import Queue, SimpleWorker

from habitbot.config import Settings
from habitbot.db import ProcessKind
from habitbot.runtime import Runtime, build_runtime
from workers import context


def install(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """Jobs run in this process use `rt`."""
    monkeypatch.setattr(context, "_runtime", rt)
    monkeypatch.setattr(context, "_pid", os.getpid())
    monkeypatch.setattr(context, "parent_guard", None)
    return rt


def job_runtime(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                kind: ProcessKind = "worker") -> Iterator[Runtime]:
    rt = install(build_runtime(kind, kind, settings=settings, configure_logging=False),
                 monkeypatch)
    yield rt
    rt.close()


class BurstWorker(SimpleWorker):
    """An in-process burst worker without RQ's command channel: its pubsub thread listens
    with a 60 s timeout, and stopping it at the end of the burst could hold a test for that
    long. A burst run takes no commands anyway."""

    def subscribe(self) -> None:
        pass

    def unsubscribe(self) -> None:
        pass


def run_burst(conn: redis.Redis, *queue_names: str) -> None:
    """Run what is queued on `queue_names` in this process, then return."""
    BurstWorker([Queue(name, connection=conn) for name in queue_names],
                connection=conn).work(burst=True)
