"""The RQ worker class used by `rq worker -w workers.worker.HabitWorker`.

It adds what RQ does not know about: our structured logs, a heartbeat that `/health` counts,
and a schema guard whose state forked work horses inherit (periodic jobs do not run in
DEGRADED mode).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from rq import Worker

from habitbot.logs import setup_logging
from habitbot.runtime import build_runtime
from habitbot.services.health import worker_beat, worker_gone
from workers import context

log = logging.getLogger(__name__)
COMMAND_POLL_SECONDS = 1.0


class HabitWorker(Worker):
    def work(self, *args: Any, **kwargs: Any) -> bool:
        setup_logging("worker")
        runtime = build_runtime("worker", "worker", configure_logging=False)
        runtime.guard.start()
        context.parent_guard = runtime.guard
        log.info("worker started", extra={"worker": self.name,
                                          "queues": [q.name for q in self.queues]})
        try:
            return super().work(*args, **kwargs)
        finally:
            runtime.close()

    def subscribe(self) -> None:
        """RQ's command channel, read with a 1 s wait instead of RQ's 60 s: stopping closes
        the channel only once its reader has come back, so with 60 s an idle worker took a
        minute to stop on TERM (`supervisorctl restart` held every reminder that long)."""
        self.log.info("Worker %s: subscribing to channel %s", self.name,
                      self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=COMMAND_POLL_SECONDS, daemon=True,
            exception_handler=self._pubsub_exception_handler)

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        super().heartbeat(*args, **kwargs)
        try:
            worker_beat(self.connection, self.name)
        except redis.RedisError:
            log.warning("worker heartbeat not written", extra={"worker": self.name})

    def register_death(self) -> None:
        try:
            worker_gone(self.connection, self.name)
        except redis.RedisError:
            pass
        super().register_death()
