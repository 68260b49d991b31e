"""gunicorn settings for the `web` program (health, provider webhooks, /admin, /metrics)."""

import os

bind = os.environ.get("GUNICORN_BIND", f"127.0.0.1:{os.environ.get('PORT', '8080')}")
worker_class = "gthread"
workers = int(os.environ.get("WEB_WORKERS", "2"))
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
