"""Typed settings read from the environment once.

`load_settings()` is called by each process entry point (never at import time). A bad value
raises `ConfigError` whose message names the variable and never echoes a secret's value;
entry points turn it into one clear line on stderr and exit code 2.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"
DEFAULT_YOOKASSA_API_URL = "https://api.yookassa.ru/v3"
DEFAULT_CRYPTOBOT_API_URL = "https://pay.crypt.bot/api"
# YooKassa's published notification sources.
DEFAULT_YOOKASSA_TRUSTED_IPS = (
    "185.71.76.0/27,185.71.77.0/27,77.75.153.0/25,77.75.156.11/32,77.75.156.35/32,"
    "77.75.154.128/25,2a02:5180::/32"
)
_TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{1,200}$")

SECRET_VARS = frozenset(
    {"BOT_TOKEN", "DATABASE_URL", "REDIS_URL", "ADMIN_TOKEN", "YOOKASSA_SECRET_KEY",
     "CRYPTOBOT_TOKEN", "METRICS_TOKEN", "SECRET_KEY"}
)
# A secret typed by a person is short or patterned; one from `secrets.token_urlsafe(32)` is
# neither. The checks refuse the first kind (the message names the variable, never the value).
MIN_ADMIN_TOKEN_LENGTH = 24
MIN_SECRET_KEY_LENGTH = 32
_MIN_DISTINCT_CHARACTERS = 10
_MIN_ESTIMATED_BITS = 64


class ConfigError(Exception):
    """A configuration variable is missing or malformed. The message is safe to print."""


@dataclass(frozen=True)
class Settings:
    bot_token: str
    database_url: str
    redis_url: str
    telegram_api_url: str = DEFAULT_TELEGRAM_API_URL
    alert_chat_id: int | None = None
    admin_token: str | None = field(default=None, repr=False)
    # Signs the /admin session cookie; unset: generated once and kept in Redis (webhooks.admin).
    secret_key: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)
    yookassa_shop_id: str | None = None
    yookassa_secret_key: str | None = field(default=None, repr=False)
    yookassa_api_url: str = DEFAULT_YOOKASSA_API_URL
    yookassa_trusted_ips: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # 54-FZ receipts sent with every YooKassa payment (the shop uses "Чеки от ЮKassa" or its
    # own online cash register): YooKassa's vat_code and, when set, tax_system_code.
    yookassa_receipts: bool = False
    yookassa_vat_code: int = 1
    yookassa_tax_system_code: int | None = None
    cryptobot_token: str | None = field(default=None, repr=False)
    cryptobot_api_url: str = DEFAULT_CRYPTOBOT_API_URL
    trusted_proxies: int = 0
    telegram_global_rate: float = 30.0
    telegram_chat_rate: float = 1.0
    telegram_paid_broadcast: bool = False
    # Inbound throttle per user (updates per second sustained, and at once) and the updates
    # one chat may have waiting in the bot: past them updates are dropped and counted.
    user_update_rate: float = 1.0
    user_update_burst: int = 20
    chat_queue_limit: int = 20
    port: int = 8080
    log_dir: str = "var/log"
    alert_cooldown_seconds: int = 900
    schema_check_interval: int = 60
    db_connect_timeout: int = 3
    # gunicorn's request threads per worker (conf/gunicorn.conf.py reads the same variable);
    # the web database pool is sized to it.
    web_threads: int = 4
    trial_days: int = 7
    # Minor units per plan and currency (kopecks, cents; whole stars for XTR).
    prices: dict[str, dict[str, int]] = field(default_factory=lambda: {
        "month": {"RUB": 19900, "USD": 299, "XTR": 150},
        "year": {"RUB": 149000, "USD": 2299, "XTR": 1100}})
    topup_amounts: tuple[int, ...] = (10000, 30000, 50000, 100000)
    payment_return_url: str | None = None
    cryptobot_accepted_assets: str = "USDT,TON,BTC,ETH,LTC,BNB,TRX,USDC"
    cryptobot_invoice_expires_in: int = 3600
    # The poller of open payments whose webhook never came (habitbot.payments.poll): how often
    # it runs, and how many payments one run asks the providers about at most.
    payment_poll_interval: int = 60
    payment_poll_batch: int = 50
    # Reminder timing (workers.reminders, habitbot.services.reminders): the tick (on boundaries
    # of its interval, which divides a minute; it also runs the reaper of expired leases), the
    # part of a tick spent claiming, a delivery's lease and how often a batch renews it.
    reminder_tick_interval: int = 60
    reminder_tick_budget: float = 40.0
    reminder_lease: int = 75
    reminder_lease_renew: float = 25.0
    # The other periodic jobs' intervals in seconds (workers.scheduler.periodic_jobs).
    weekly_summaries_interval: int = 900
    flush_alerts_interval: int = 60
    cleanup_interval: int = 3600
    premium_notices_interval: int = 600
    payment_notices_interval: int = 60

    def __repr__(self) -> str:  # never print secrets, even in a traceback
        return f"Settings(telegram_api_url={self.telegram_api_url!r}, port={self.port})"


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _parse(env: Mapping[str, str], name: str, parser: Callable[[str], T], default: T,
           expected: str) -> T:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        return parser(raw)
    except (ValueError, TypeError):
        shown = "<hidden>" if name in SECRET_VARS else repr(raw[:40])
        raise ConfigError(f"{name} is invalid: expected {expected}, got {shown}") from None


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(raw)
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError(raw)
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(raw)
    return value


def _chat_id(raw: str) -> int:
    value = int(raw)
    if value == 0:
        raise ValueError(raw)
    return value


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _http_url(raw: str) -> str:
    if not re.match(r"^https?://[^\s/]+", raw):
        raise ValueError(raw)
    return raw.rstrip("/")


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    return tuple(ipaddress.ip_network(p, strict=False) for p in parts)


def _prices(raw: str) -> dict[str, int]:
    """"RUB:19900,USD:299,XTR:150" → {"RUB": 19900, ...}: minor units, positive."""
    out: dict[str, int] = {}
    for part in raw.split(","):
        currency, _, amount = part.strip().partition(":")
        currency = currency.strip().upper()
        if not re.fullmatch(r"[A-Z]{3,8}", currency) or currency in out:
            raise ValueError(raw)
        out[currency] = _positive_int(amount.strip())
    return out


def _amounts(raw: str) -> tuple[int, ...]:
    values = tuple(_positive_int(p.strip()) for p in raw.split(",") if p.strip())
    if not values or len(values) > 8 or any(v % 100 for v in values):
        raise ValueError(raw)
    return tuple(sorted(set(values)))


def _assets(raw: str) -> str:
    parts = [p.strip().upper() for p in raw.split(",") if p.strip()]
    if not parts or not all(re.fullmatch(r"[A-Z0-9]{2,10}", p) for p in parts):
        raise ValueError(raw)
    return ",".join(parts)


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(raw)
        return value
    return parse


def _estimated_bits(value: str) -> float:
    """Shannon entropy of the characters times the length: low for repeats and patterns."""
    counts = Counter(value)
    return -sum(n * math.log2(n / len(value)) for n in counts.values())


def _strong_secret(env: Mapping[str, str], name: str, min_length: int) -> str | None:
    value = _get(env, name)
    if value is None:
        return None
    classes = sum(1 for test in (str.islower, str.isupper, str.isdigit)
                  if any(test(c) for c in value)) + any(not c.isalnum() for c in value)
    if (len(value) < min_length or classes < 2
            or len(set(value)) < _MIN_DISTINCT_CHARACTERS
            or _estimated_bits(value) < _MIN_ESTIMATED_BITS):
        raise ConfigError(
            f"{name} is too weak: expected at least {min_length} random characters of two "
            "kinds or more (letters, digits, symbols), e.g. from `python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`; got <hidden>")
    return value


def _require(env: Mapping[str, str], name: str, expected: str) -> str:
    value = _get(env, name)
    if value is None:
        raise ConfigError(f"{name} is not set: expected {expected}")
    return value


def _database_url(env: Mapping[str, str]) -> str:
    url = _require(env, "DATABASE_URL", "a postgresql:// URL")
    if not re.match(r"^postgres(ql)?(\+psycopg2)?://", url):
        raise ConfigError("DATABASE_URL is invalid: expected a postgresql:// URL, got <hidden>")
    return url


def _redis_url(env: Mapping[str, str]) -> str:
    url = _require(env, "REDIS_URL", "a redis:// URL")
    if not re.match(r"^(redis|rediss|unix)://", url):
        raise ConfigError("REDIS_URL is invalid: expected a redis:// URL, got <hidden>")
    return url


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every variable; raise ConfigError naming the first bad one."""
    env = os.environ if env is None else env
    token = _require(env, "BOT_TOKEN", "a token like 123456:ABC-DEF")
    if not _TOKEN_RE.match(token):
        raise ConfigError("BOT_TOKEN is invalid: expected a token like 123456:ABC-DEF, "
                          "got <hidden>")
    defaults = Settings("", "", "")
    return Settings(
        bot_token=token,
        database_url=_database_url(env),
        redis_url=_redis_url(env),
        telegram_api_url=_parse(env, "TELEGRAM_API_URL", _http_url, DEFAULT_TELEGRAM_API_URL,
                                "an http(s) URL"),
        alert_chat_id=_parse(env, "ALERT_CHAT_ID", _chat_id, None, "a non-zero integer chat id"),
        admin_token=_strong_secret(env, "ADMIN_TOKEN", MIN_ADMIN_TOKEN_LENGTH),
        secret_key=_strong_secret(env, "SECRET_KEY", MIN_SECRET_KEY_LENGTH),
        # Guessed online at request speed (no login form to limit): as strong as ADMIN_TOKEN.
        metrics_token=_strong_secret(env, "METRICS_TOKEN", MIN_ADMIN_TOKEN_LENGTH),
        yookassa_shop_id=_get(env, "YOOKASSA_SHOP_ID"),
        yookassa_secret_key=_get(env, "YOOKASSA_SECRET_KEY"),
        yookassa_api_url=_parse(env, "YOOKASSA_API_URL", _http_url, DEFAULT_YOOKASSA_API_URL,
                                "an http(s) URL"),
        yookassa_trusted_ips=_parse(env, "YOOKASSA_TRUSTED_IPS", _networks,
                                    _networks(DEFAULT_YOOKASSA_TRUSTED_IPS),
                                    "a comma-separated list of IPs or CIDR ranges"),
        yookassa_receipts=_parse(env, "YOOKASSA_RECEIPTS", _bool, False, "on or off"),
        yookassa_vat_code=_parse(env, "YOOKASSA_VAT_CODE", _bounded(1, 12), 1,
                                 "a YooKassa vat_code 1-12 (1 = without VAT)"),
        yookassa_tax_system_code=_parse(env, "YOOKASSA_TAX_SYSTEM_CODE", _bounded(1, 6), None,
                                        "a YooKassa tax_system_code 1-6, or unset"),
        cryptobot_token=_get(env, "CRYPTOBOT_TOKEN"),
        cryptobot_api_url=_parse(env, "CRYPTOBOT_API_URL", _http_url, DEFAULT_CRYPTOBOT_API_URL,
                                 "an http(s) URL"),
        trusted_proxies=_parse(env, "TRUSTED_PROXIES", _non_negative_int, 0,
                               "a whole number >= 0"),
        telegram_global_rate=_parse(env, "TELEGRAM_GLOBAL_RATE", _positive_float, 30.0,
                                    "a positive number of messages per second"),
        telegram_chat_rate=_parse(env, "TELEGRAM_CHAT_RATE", _positive_float, 1.0,
                                  "a positive number of messages per second"),
        telegram_paid_broadcast=_parse(env, "TELEGRAM_PAID_BROADCAST", _bool, False,
                                       "true or false"),
        user_update_rate=_parse(env, "USER_UPDATE_RATE", _positive_float, 1.0,
                                "a positive number of updates per second"),
        user_update_burst=_parse(env, "USER_UPDATE_BURST", _bounded(1, 1000), 20,
                                 "a number of updates 1-1000"),
        chat_queue_limit=_parse(env, "CHAT_QUEUE_LIMIT", _bounded(1, 1000), 20,
                                "a number of updates 1-1000"),
        port=_parse(env, "PORT", _port, 8080, "a port number 1-65535"),
        log_dir=_get(env, "LOG_DIR") or "var/log",
        alert_cooldown_seconds=_parse(env, "ALERT_COOLDOWN_SECONDS", _positive_int, 900,
                                      "a positive number of seconds"),
        schema_check_interval=_parse(env, "SCHEMA_CHECK_INTERVAL", _positive_int, 60,
                                     "a positive number of seconds"),
        db_connect_timeout=_parse(env, "DB_CONNECT_TIMEOUT", _positive_int, 3,
                                  "a positive number of seconds"),
        web_threads=_parse(env, "WEB_THREADS", _bounded(1, 64), 4, "a number 1-64"),
        trial_days=_parse(env, "TRIAL_DAYS", _bounded(1, 365), 7, "a number of days 1-365"),
        prices={plan: _parse(env, f"PRICE_{plan.upper()}", _prices, defaults.prices[plan],
                             "CURRENCY:minor units pairs like RUB:19900,USD:299,XTR:150")
                for plan in ("month", "year")},
        topup_amounts=_parse(env, "TOPUP_AMOUNTS", _amounts, defaults.topup_amounts,
                             "up to 8 comma-separated amounts in kopecks, whole roubles"),
        payment_return_url=_parse(env, "PAYMENT_RETURN_URL", _http_url, None,
                                  "an http(s) URL"),
        cryptobot_accepted_assets=_parse(env, "CRYPTOBOT_ACCEPTED_ASSETS", _assets,
                                         defaults.cryptobot_accepted_assets,
                                         "a comma-separated list of asset codes"),
        cryptobot_invoice_expires_in=_parse(env, "CRYPTOBOT_INVOICE_EXPIRES_IN",
                                            _bounded(60, 2678400), 3600,
                                            "seconds between 60 and 2678400"),
        payment_poll_interval=_parse(env, "PAYMENT_POLL_INTERVAL", _bounded(10, 3600), 60,
                                     "seconds between 10 and 3600"),
        payment_poll_batch=_parse(env, "PAYMENT_POLL_BATCH", _bounded(1, 500), 50,
                                  "a number of payments between 1 and 500"),
        **_reminder_timing(env),
        weekly_summaries_interval=_parse(env, "WEEKLY_SUMMARIES_INTERVAL", _bounded(10, 86400),
                                         900, "seconds between 10 and 86400"),
        flush_alerts_interval=_parse(env, "FLUSH_ALERTS_INTERVAL", _bounded(1, 3600), 60,
                                     "seconds between 1 and 3600"),
        cleanup_interval=_parse(env, "CLEANUP_INTERVAL", _bounded(10, 86400), 3600,
                                "seconds between 10 and 86400"),
        premium_notices_interval=_parse(env, "PREMIUM_NOTICES_INTERVAL", _bounded(10, 86400),
                                        600, "seconds between 10 and 86400"),
        payment_notices_interval=_parse(env, "PAYMENT_NOTICES_INTERVAL", _bounded(1, 3600), 60,
                                        "seconds between 1 and 3600"),
    )


def _minute_divisor(raw: str) -> int:
    value = int(raw)
    if value <= 0 or 60 % value:
        raise ValueError(raw)
    return value


def _reminder_timing(env: Mapping[str, str]) -> dict[str, Any]:
    """The tick and lease settings, checked against each other: a tick shorter than its
    interval, a lease renewed at least twice before it runs out. Unset, the budget and the
    renewal follow the tick and the lease (2/3 of the tick, 1/3 of the lease)."""
    tick = _parse(env, "REMINDER_TICK_INTERVAL", _minute_divisor, 60,
                  "seconds that divide a minute (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)")
    budget = _parse(env, "REMINDER_TICK_BUDGET", _positive_float, tick * 2 / 3,
                    "a positive number of seconds below REMINDER_TICK_INTERVAL")
    if budget >= tick:
        raise ConfigError(f"REMINDER_TICK_BUDGET is invalid: expected seconds below "
                          f"REMINDER_TICK_INTERVAL ({tick}), got {budget:g}")
    lease = _parse(env, "REMINDER_LEASE", _bounded(3, 3600), 75,
                   "seconds between 3 and 3600")
    renew = _parse(env, "REMINDER_LEASE_RENEW", _positive_float, lease / 3,
                   "a positive number of seconds below half of REMINDER_LEASE")
    if not lease > 2 * renew:
        raise ConfigError(f"REMINDER_LEASE_RENEW is invalid: expected seconds below half of "
                          f"REMINDER_LEASE ({lease}), got {renew:g}")
    return {"reminder_tick_interval": tick, "reminder_tick_budget": budget,
            "reminder_lease": lease, "reminder_lease_renew": renew}
