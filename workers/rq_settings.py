"""Settings module for `rq worker -c workers.rq_settings` (read by RQ's command line)."""

import os

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUES = ["high", "default", "reminders", "files"]
