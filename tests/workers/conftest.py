"""Jobs run in-process (RQ SimpleWorker) against the real database, Redis and the emulator."""

from __future__ import annotations

import os

import pytest

from habitbot.runtime import build_runtime
from workers import context


@pytest.fixture
def runtime(settings, monkeypatch):
    rt = build_runtime("worker", "worker", settings=settings, configure_logging=False)
    monkeypatch.setattr(context, "_runtime", rt)
    monkeypatch.setattr(context, "_pid", os.getpid())
    monkeypatch.setattr(context, "parent_guard", None)
    yield rt
    rt.close()
