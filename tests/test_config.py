"""Configuration: every bad value stops with one line naming the variable, never its value."""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest

from habitbot.config import ConfigError, load_settings
from tests.conftest import make_env

GOOD = {
    "BOT_TOKEN": "123456:ABC-def_ghi",
    "DATABASE_URL": "postgresql://u:supersecret@127.0.0.1:5432/habitbot",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}
STRONG_ADMIN_TOKEN = "vK3q-9xLm_T2pZr8WnB4yHc7"
STRONG_SECRET_KEY = "Qm7_rT2x-Lp9ZkW4vN8cYb3hJd6fGs1aXe5u"


def test_defaults_follow_the_design_table():
    s = load_settings(GOOD)
    assert s.telegram_api_url == "https://api.telegram.org"
    assert s.yookassa_api_url == "https://api.yookassa.ru/v3"
    assert s.cryptobot_api_url == "https://pay.crypt.bot/api"
    assert (s.telegram_global_rate, s.telegram_chat_rate) == (30.0, 1.0)
    assert s.port == 8080 and s.trusted_proxies == 0 and s.log_dir == "var/log"
    assert s.alert_chat_id is None and s.admin_token is None
    assert any(str(n) == "185.71.76.0/27" for n in s.yookassa_trusted_ips)


def test_repr_never_shows_secrets():
    s = load_settings({**GOOD, "ADMIN_TOKEN": STRONG_ADMIN_TOKEN, "CRYPTOBOT_TOKEN": "cb-secret",
                       "SECRET_KEY": STRONG_SECRET_KEY})
    shown = repr(s) + str(s)
    for secret in ("supersecret", "ABC-def_ghi", STRONG_ADMIN_TOKEN, "cb-secret",
                   STRONG_SECRET_KEY):
        assert secret not in shown


@pytest.mark.parametrize("name", ["BOT_TOKEN", "DATABASE_URL", "REDIS_URL"])
def test_missing_required_variable_is_named(name):
    env = {k: v for k, v in GOOD.items() if k != name}
    with pytest.raises(ConfigError, match=f"^{name} is not set"):
        load_settings(env)


@pytest.mark.parametrize("name,value", [
    ("BOT_TOKEN", "not-a-token"),
    ("BOT_TOKEN", "123:has spaces"),
    ("DATABASE_URL", "mysql://u:supersecret@host/db"),
    ("REDIS_URL", "http://u:supersecret@host"),
    ("PORT", "0"),
    ("PORT", "http"),
    ("PORT", "70000"),
    ("TELEGRAM_GLOBAL_RATE", "-1"),
    ("TELEGRAM_GLOBAL_RATE", "nan"),
    ("TELEGRAM_CHAT_RATE", "fast"),
    ("ALERT_CHAT_ID", "@channel"),
    ("ALERT_CHAT_ID", "0"),
    ("TRUSTED_PROXIES", "-2"),
    ("YOOKASSA_TRUSTED_IPS", "1.2.3.4/99"),
    ("TELEGRAM_API_URL", "ftp://example"),
    ("ALERT_COOLDOWN_SECONDS", "0"),
    ("WEB_THREADS", "0"),
    ("WEB_THREADS", "65"),
])
def test_malformed_value_is_named_without_echoing_secrets(name, value):
    with pytest.raises(ConfigError) as info:
        load_settings({**GOOD, name: value})
    message = str(info.value)
    assert message.startswith(f"{name} is invalid")
    assert "supersecret" not in message
    if name == "BOT_TOKEN":
        assert value not in message


def test_blank_optional_values_mean_unset():
    s = load_settings({**GOOD, "ALERT_CHAT_ID": "  ", "ADMIN_TOKEN": ""})
    assert s.alert_chat_id is None and s.admin_token is None


def test_process_exits_with_one_clear_line_and_no_traceback():
    env = {"PATH": "/usr/bin:/bin", **GOOD, "BOT_TOKEN": "123456:ok", "PORT": "eighty"}
    result = subprocess.run([sys.executable, "-m", "habitbot.bot"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["habitbot bot: configuration error: PORT is invalid: expected a port "
                     "number 1-65535, got 'eighty'"]
    assert "supersecret" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("raw,expected", [("true", True), ("1", True), ("off", False)])
def test_paid_broadcast_flag(raw, expected):
    assert load_settings({**GOOD, "TELEGRAM_PAID_BROADCAST": raw}).telegram_paid_broadcast \
        is expected


def test_paid_broadcast_flag_refuses_nonsense():
    with pytest.raises(ConfigError, match="TELEGRAM_PAID_BROADCAST is invalid"):
        load_settings({**GOOD, "TELEGRAM_PAID_BROADCAST": "maybe"})


def _env(**extra: str) -> dict[str, str]:
    return {**GOOD, **extra}


def test_prices_trial_and_top_ups_are_configurable():
    settings = load_settings(_env(PRICE_MONTH="rub:25000, XTR:200", TRIAL_DAYS="14",
                                  TOPUP_AMOUNTS="50000,10000", PAYMENT_RETURN_URL=
                                  "https://t.me/habit_bot", CRYPTOBOT_ACCEPTED_ASSETS="usdt,ton",
                                  CRYPTOBOT_INVOICE_EXPIRES_IN="900"))
    assert settings.prices["month"] == {"RUB": 25000, "XTR": 200}
    assert settings.prices["year"]["RUB"] == 149000  # untouched default
    assert settings.trial_days == 14 and settings.topup_amounts == (10000, 50000)
    assert settings.payment_return_url == "https://t.me/habit_bot"
    assert settings.cryptobot_accepted_assets == "USDT,TON"
    assert settings.cryptobot_invoice_expires_in == 900


@pytest.mark.parametrize("name, value", [
    ("PRICE_MONTH", "RUB:0"), ("PRICE_MONTH", "RUB"), ("PRICE_MONTH", "RUB:1,RUB:2"),
    ("PRICE_YEAR", "₽:100"), ("TRIAL_DAYS", "0"), ("TRIAL_DAYS", "400"),
    ("TOPUP_AMOUNTS", "150"), ("TOPUP_AMOUNTS", ","), ("TOPUP_AMOUNTS", "-100"),
    ("PAYMENT_RETURN_URL", "javascript:alert(1)"), ("CRYPTOBOT_ACCEPTED_ASSETS", "US DT"),
    ("CRYPTOBOT_INVOICE_EXPIRES_IN", "10"),
])
def test_bad_payment_settings_are_refused_by_name(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings(_env(**{name: value}))


def test_receipts_are_off_by_default_without_vat_or_tax_system():
    settings = load_settings(GOOD)
    assert settings.yookassa_receipts is False
    assert (settings.yookassa_vat_code, settings.yookassa_tax_system_code) == (1, None)


def test_receipts_with_a_vat_code_and_a_tax_system():
    settings = load_settings(_env(YOOKASSA_RECEIPTS="on", YOOKASSA_VAT_CODE="4",
                                  YOOKASSA_TAX_SYSTEM_CODE="2"))
    assert settings.yookassa_receipts is True
    assert (settings.yookassa_vat_code, settings.yookassa_tax_system_code) == (4, 2)
    assert load_settings(_env(YOOKASSA_RECEIPTS="off", YOOKASSA_TAX_SYSTEM_CODE=" ")) \
        .yookassa_tax_system_code is None


@pytest.mark.parametrize("name, value", [
    ("YOOKASSA_RECEIPTS", "maybe"), ("YOOKASSA_RECEIPTS", "54"),
    ("YOOKASSA_VAT_CODE", "0"), ("YOOKASSA_VAT_CODE", "13"), ("YOOKASSA_VAT_CODE", "20%"),
    ("YOOKASSA_VAT_CODE", "1.5"), ("YOOKASSA_TAX_SYSTEM_CODE", "0"),
    ("YOOKASSA_TAX_SYSTEM_CODE", "7"), ("YOOKASSA_TAX_SYSTEM_CODE", "usn"),
])
def test_bad_receipt_settings_are_refused_by_name(name, value):
    with pytest.raises(ConfigError) as info:
        load_settings(_env(**{name: value}))
    assert str(info.value).startswith(f"{name} is invalid: expected ")
    assert repr(value) in str(info.value)


def test_the_web_database_pool_follows_the_request_threads(database_url, redis_url):
    """gunicorn's threads each hold one connection: the web program's pool has as many, so
    none opens and closes an overflow connection per request under load."""
    from habitbot.runtime import build_runtime

    for threads, expected in (("12", 12), ("2", 4)):
        settings = load_settings(make_env(database_url, redis_url, "http://127.0.0.1:9",
                                          WEB_THREADS=threads))
        runtime = build_runtime("web", "web", settings, configure_logging=False)
        try:
            assert runtime.engine.pool.size() == expected
        finally:
            runtime.close()


@pytest.mark.parametrize("name, value", [
    ("ADMIN_TOKEN", "admin"), ("ADMIN_TOKEN", "admin-secret"),
    ("ADMIN_TOKEN", "x" * 40), ("ADMIN_TOKEN", "abababababababababababab12"),
    ("ADMIN_TOKEN", "correcthorsebatterystaple"), ("ADMIN_TOKEN", "123456789012345678901234"),
    ("ADMIN_TOKEN", STRONG_ADMIN_TOKEN[:23]),
    ("SECRET_KEY", "short-Key-1"), ("SECRET_KEY", STRONG_ADMIN_TOKEN),
    ("SECRET_KEY", "Aa1" * 12), ("METRICS_TOKEN", "scrape-secret-1"),
])
def test_a_weak_admin_token_or_secret_key_is_refused_at_start(name, value):
    with pytest.raises(ConfigError) as info:
        load_settings({**GOOD, name: value})
    message = str(info.value)
    assert message.startswith(f"{name} is too weak: expected at least ")
    assert value not in message and "<hidden>" in message


def test_generated_secrets_are_accepted():
    for _ in range(50):
        s = load_settings({**GOOD, "ADMIN_TOKEN": secrets.token_urlsafe(32),
                           "SECRET_KEY": secrets.token_urlsafe(32)})
        assert s.admin_token and s.secret_key
    assert load_settings(GOOD).secret_key is None  # generated and kept in Redis instead


def test_a_weak_admin_token_stops_a_program_naming_the_variable():
    env = {"PATH": "/usr/bin:/bin", **GOOD, "ADMIN_TOKEN": "hunter2hunter2"}
    result = subprocess.run([sys.executable, "-m", "habitbot.bot"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "habitbot bot: configuration error: ADMIN_TOKEN is too weak")
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_reminder_timing_and_periodic_intervals_default_to_production():
    settings = load_settings(GOOD)
    assert (settings.reminder_tick_interval, settings.reminder_tick_budget,
            settings.reminder_lease, settings.reminder_lease_renew) == (60, 40.0, 75, 25.0)
    assert (settings.weekly_summaries_interval, settings.flush_alerts_interval,
            settings.cleanup_interval, settings.premium_notices_interval,
            settings.payment_notices_interval) == (900, 60, 3600, 600, 60)


def test_shrunk_reminder_timing_follows_the_tick_and_the_lease():
    settings = load_settings(_env(REMINDER_TICK_INTERVAL="3", REMINDER_LEASE="9",
                                  FLUSH_ALERTS_INTERVAL="2"))
    assert (settings.reminder_tick_interval, settings.reminder_tick_budget,
            settings.reminder_lease, settings.reminder_lease_renew) == (3, 2.0, 9, 3.0)
    assert settings.flush_alerts_interval == 2
    explicit = load_settings(_env(REMINDER_TICK_BUDGET="30", REMINDER_LEASE_RENEW="10.5"))
    assert (explicit.reminder_tick_budget, explicit.reminder_lease_renew) == (30.0, 10.5)


@pytest.mark.parametrize("env, name", [
    ({"REMINDER_TICK_INTERVAL": "0"}, "REMINDER_TICK_INTERVAL"),
    ({"REMINDER_TICK_INTERVAL": "7"}, "REMINDER_TICK_INTERVAL"),  # does not divide a minute
    ({"REMINDER_TICK_INTERVAL": "120"}, "REMINDER_TICK_INTERVAL"),
    ({"REMINDER_TICK_INTERVAL": "5s"}, "REMINDER_TICK_INTERVAL"),
    ({"REMINDER_TICK_BUDGET": "60"}, "REMINDER_TICK_BUDGET"),  # not below the tick
    ({"REMINDER_TICK_INTERVAL": "5", "REMINDER_TICK_BUDGET": "5"}, "REMINDER_TICK_BUDGET"),
    ({"REMINDER_TICK_BUDGET": "-1"}, "REMINDER_TICK_BUDGET"),
    ({"REMINDER_TICK_BUDGET": "nan"}, "REMINDER_TICK_BUDGET"),
    ({"REMINDER_LEASE": "2"}, "REMINDER_LEASE"),
    ({"REMINDER_LEASE": "86400"}, "REMINDER_LEASE"),
    ({"REMINDER_LEASE_RENEW": "37.5"}, "REMINDER_LEASE_RENEW"),  # lease not > 2 × renew
    ({"REMINDER_LEASE": "9", "REMINDER_LEASE_RENEW": "5"}, "REMINDER_LEASE_RENEW"),
    ({"REMINDER_LEASE_RENEW": "0"}, "REMINDER_LEASE_RENEW"),
    ({"WEEKLY_SUMMARIES_INTERVAL": "5"}, "WEEKLY_SUMMARIES_INTERVAL"),
    ({"FLUSH_ALERTS_INTERVAL": "0"}, "FLUSH_ALERTS_INTERVAL"),
    ({"CLEANUP_INTERVAL": "999999"}, "CLEANUP_INTERVAL"),
    ({"PREMIUM_NOTICES_INTERVAL": "x"}, "PREMIUM_NOTICES_INTERVAL"),
    ({"PAYMENT_NOTICES_INTERVAL": "-60"}, "PAYMENT_NOTICES_INTERVAL"),
])
def test_bad_timing_settings_are_refused_by_name(env, name):
    with pytest.raises(ConfigError, match=f"^{name} is invalid"):
        load_settings(_env(**env))
