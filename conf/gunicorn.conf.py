"""gunicorn settings for the `web` program (health, provider webhooks, /admin, /metrics)."""

import os

bind = os.environ.get("GUNICORN_BIND", f"127.0.0.1:{os.environ.get('PORT', '8080')}")
worker_class = "gthread"
# One worker per core: a webhook is CPU-bound here (~3 ms of Python per verified notification)
# and each worker has its own GIL; more workers than cores only add memory and connections.
workers = int(os.environ.get("WEB_WORKERS", "2"))
# Threads cover the waits (the provider's API re-read, the database). The web database pool
# follows WEB_THREADS (habitbot.runtime; at least 4, plus 4 overflow): each request thread holds
# one connection at a time, and threads beyond the pool would open and close an overflow
# connection per request under load — measured at 8 threads over a pool of 4, about 1 ms more
# PostgreSQL CPU per webhook and a quarter fewer webhooks per second. Mind PostgreSQL's
# max_connections: WEB_WORKERS × (WEB_THREADS + 4) for the web program alone.
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30
graceful_timeout = 25
keepalive = 5
# Engines and Redis clients are created per worker, after the fork.
preload_app = False
# Provider webhooks are small; anything larger is refused before it reaches Flask.
limit_request_line = 4094
limit_request_field_size = 8190
accesslog = "-"
errorlog = "-"
# No query strings in the access log: nothing secret may land there by accident.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
