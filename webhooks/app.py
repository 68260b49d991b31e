"""Flask application factory: `/health`, the provider webhooks, `/admin` and `/metrics`.

`create_app(config=None)` reads the environment when no settings are passed, so gunicorn runs
`webhooks.app:create_app()` and tests pass their own settings.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from rq import Queue

from habitbot import metrics
from habitbot.config import Settings
from habitbot.runtime import build_runtime
from habitbot.services.health import HealthChecker
from webhooks.admin import bp as admin_bp
from webhooks.health import bp as health_bp
from webhooks.metrics import bp as metrics_bp
from webhooks.payments import bp as payments_bp
from workers import queues


def create_app(config: Settings | None = None, configure_logging: bool = True) -> Flask:
    runtime = build_runtime("web", "web", settings=config, configure_logging=configure_logging)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.extensions["habitbot"] = runtime
    app.extensions["health"] = HealthChecker(
        runtime.engine, runtime.redis,
        queue_lengths=lambda: {name: Queue(name, connection=runtime.redis).count
                               for name in queues.ALL})
    app.register_blueprint(health_bp)
    app.register_blueprint(payments_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(metrics_bp)
    _count_requests(app)
    return app


def _count_requests(app: Flask) -> None:
    """Requests by endpoint (the route's name, not the path: bounded cardinality) and status,
    and their duration; whatever the request counts itself (webhook outcomes, credits) goes
    out in the same single Redis round trip at its end. A scrape of /metrics that is answered
    is not counted (it would count itself); a refused one is."""

    @app.before_request
    def started() -> None:
        g.started = time.perf_counter()
        g.metrics = metrics.collecting(app.extensions["habitbot"].redis)
        g.metrics_batch = g.metrics.__enter__()

    @app.after_request
    def counted(response: Response) -> Response:
        endpoint = request.endpoint or "unmatched"
        batch = g.get("metrics_batch")
        if batch is not None and (endpoint != "metrics.scrape"
                                  or response.status_code != 200):
            batch.incr("habitbot_http_requests_total", endpoint=endpoint,
                       status=response.status_code)
            batch.observe("habitbot_http_request_duration_seconds",
                          time.perf_counter() - g.get("started", time.perf_counter()),
                          endpoint=endpoint)
        return response

    @app.teardown_request
    def flushed(_exc: BaseException | None) -> None:
        collector = g.pop("metrics", None)
        if collector is not None:
            collector.__exit__(None, None, None)
