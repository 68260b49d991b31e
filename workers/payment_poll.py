"""The `payment_poll` periodic job: ask the providers about open payments whose webhook never
came, and settle them through the same exactly-once path (`habitbot.payments.poll`)."""

from __future__ import annotations

from habitbot.payments import poll
from workers.periodic import run_periodic

# The run stops asking after poll.BUDGET_SECONDS; one provider call in hand may take about
# 45 s more (three timed-out attempts). The job's timeout and lock leave room for both.
JOB_TIMEOUT = 240
LOCK_TTL = JOB_TIMEOUT + 60


def tick() -> int:
    return run_periodic("payment_poll", poll.run, lock_ttl=LOCK_TTL)
