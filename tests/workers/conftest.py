"""Jobs run in-process (RQ SimpleWorker) against the real database, Redis and the emulator."""

from __future__ import annotations

import pytest

from tests.support.jobs import job_runtime


@pytest.fixture
def runtime(settings, monkeypatch):
    yield from job_runtime(settings, monkeypatch)
