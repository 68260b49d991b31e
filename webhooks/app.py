"""Flask application factory: `/health` now; provider webhooks, `/admin` and `/metrics` join it.

`create_app(config=None)` reads the environment when no settings are passed, so gunicorn runs
`webhooks.app:create_app()` and tests pass their own settings.
"""

from __future__ import annotations

from flask import Flask
from rq import Queue

from habitbot.config import Settings
from habitbot.runtime import build_runtime
from habitbot.services.health import HealthChecker
from webhooks.admin import bp as admin_bp
from webhooks.health import bp as health_bp
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
    return app
