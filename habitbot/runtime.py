"""Process bootstrap shared by every program: settings, logging, database, Redis, alerts.

`bootstrap()` turns a configuration error into one clear line on stderr and exit code 2 (no
traceback, no secret), so supervisord's log says exactly which variable to fix.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import redis
from sqlalchemy import Engine

from habitbot import metrics
from habitbot.config import ConfigError, Settings, load_settings
from habitbot.db import ProcessKind, make_engine
from habitbot.logs import setup_logging
from habitbot.redis_client import make_redis
from habitbot.services import billing
from habitbot.services.alerts import TELEGRAM_UNREACHABLE, AlertService
from habitbot.services.guard import SchemaGuard
from habitbot.services.users import mark_blocked
from habitbot.telegram.client import BotApiClient
from habitbot.telegram.limiter import ALERT, Limits, RateLimiter
from habitbot.telegram.sender import Sender


@dataclass
class Runtime:
    program: str
    settings: Settings
    engine: Engine
    redis: redis.Redis
    telegram: BotApiClient
    sender: Sender
    alerts: AlertService
    guard: SchemaGuard = field(init=False)

    def __post_init__(self) -> None:
        self.guard = SchemaGuard(self.engine, self.program, self.alerts,
                                 interval=self.settings.schema_check_interval)

    def close(self) -> None:
        self.guard.stop()
        self.telegram.close()
        self.engine.dispose()
        self.redis.close()


def load_settings_or_exit(program: str) -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"habitbot {program}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def build_runtime(program: str, kind: ProcessKind, settings: Settings | None = None,
                  configure_logging: bool = True) -> Runtime:
    settings = settings or load_settings_or_exit(program)
    if configure_logging:
        setup_logging(program)
    engine = make_engine(settings.database_url, kind, settings.db_connect_timeout,
                         pool_size=max(settings.web_threads, 4) if kind == "web" else None)
    redis_conn = make_redis(settings.redis_url)
    billing.configure(
        settings.prices, settings.trial_days,
        on_credited=lambda provider, kind_: metrics.incr(
            redis_conn, "habitbot_payments_credited_total", provider=provider, type=kind_),
        on_refunded=lambda provider, _kind: metrics.incr(
            redis_conn, "habitbot_payments_refunded_total", provider=provider))
    telegram = BotApiClient(settings.telegram_api_url, settings.bot_token)
    limiter = RateLimiter(redis_conn, Limits(global_rate=settings.telegram_global_rate,
                                             chat_rate=settings.telegram_chat_rate))
    sender = Sender(telegram, redis_conn, limiter,
                    on_blocked=lambda chat_id: mark_blocked(engine, chat_id))

    def deliver(chat_id: int, text: str) -> None:
        sender.send_message(chat_id, text, lane=ALERT)

    alerts = AlertService(engine, redis_conn, deliver, settings.alert_chat_id,
                          settings.alert_cooldown_seconds)

    def unreachable(detail: str) -> None:
        alerts.raise_alert(
            "CRITICAL", "telegram", f"Bot API unreachable after retries ({detail}); messages "
            "are delayed — check the network and https://api.telegram.org from this host",
            fingerprint=TELEGRAM_UNREACHABLE)

    sender.on_unreachable = unreachable
    return Runtime(program, settings, engine, redis_conn, telegram, sender, alerts)
