"""Each webhooks test starts with no refusal logged yet (the logs of refusals are throttled
per process)."""

from __future__ import annotations

import pytest

from habitbot.logs import Throttled


@pytest.fixture(autouse=True)
def _quiet_slate() -> None:
    Throttled.reset_all()
