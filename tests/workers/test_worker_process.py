"""The worker program as supervisord runs it (`rq worker -w workers.worker.HabitWorker`): an
idle worker stops at once on TERM, and RQ's command channel still reaches it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from rq import Worker
from rq.command import send_shutdown_command

from tests.conftest import make_env
from tests.support.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "worker-process-test"


@pytest.fixture
def start_worker(database_url, redis_url, emulator, redis_conn, tmp_path):
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        env = {**os.environ, **make_env(database_url, redis_url, emulator.url,
                                        LOG_DIR=str(tmp_path))}
        env.pop("ALERT_CHAT_ID")
        log = (tmp_path / f"worker-{len(started)}.log").open("w")
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "rq"), "worker", "-c", "workers.rq_settings",
             "-w", "workers.worker.HabitWorker", "-u", redis_url, "--worker-ttl", "60", QUEUE],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        started.append(proc)
        wait_until(lambda: _listening(redis_conn), timeout=30, what="the worker to register")
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _listening(conn: redis.Redis) -> bool:
    return any(QUEUE in w.queue_names() for w in Worker.all(connection=conn))


def test_an_idle_worker_stops_on_term_without_waiting_out_the_command_channel(start_worker):
    """RQ reads its command channel with a 60 s wait and closes it on stop only once the read
    returns: an idle worker took a minute to stop, and `supervisorctl restart` held every
    reminder that long. The deadline here is well under that minute."""
    proc = start_worker()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_rqs_command_channel_still_reaches_the_worker(start_worker, redis_conn):
    proc = start_worker()
    [worker] = [w for w in Worker.all(connection=redis_conn) if QUEUE in w.queue_names()]
    send_shutdown_command(redis_conn, worker.name)
    assert proc.wait(timeout=20) == 0
