"""The poller of open payments against the YooKassa and Crypto Pay emulators told not to deliver
their webhooks: a lost webhook is credited once through the same claim, races with a late
webhook and the "check payment" button credit once, a provider that is down changes nothing,
expired payments are closed, and a payment checked recently is not asked again before its
time (read from the emulators' request logs; `now` is passed in, nothing waits)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from habitbot.config import ConfigError, load_settings
from habitbot.payments import poll, service
from habitbot.services import billing
from tests.conftest import make_env
from tests.payments.support import ALICE_TG, bot_texts, credits, payment_row, run_jobs

RECEIVED = "Payment received"


def _started(runtime, user_id: int, provider: str,
             amount: int = 10000) -> tuple[int, str, datetime]:
    """A top-up created at the provider: (our id, the provider's id, when we created it)."""
    started = service.start_payment(runtime, user_id, provider, "balance_topup",
                                    amount_minor=amount)
    row = payment_row(runtime.engine, started.payment_id)
    return started.payment_id, row.provider_payment_id, row.created_at


def _asked(kassa_control, provider_id: str, since_id: int = 0) -> int:
    return sum(1 for r in kassa_control.requests("get_payment", since_id)
               if r["object_id"] == provider_id)


def _last_request(control) -> int:
    entries = control.requests()
    return entries[-1]["id"] if entries else 0


def _received(emu_client) -> list[str]:
    return [t for t in bot_texts(emu_client, ALICE_TG) if RECEIVED in t]


@pytest.fixture
def no_webhooks(kassa_control, cryptopay_control):
    """Both providers lose every notification."""
    kassa_control.set_webhook(enabled=False)
    cryptopay_control.set_webhook(enabled=False)


# ---------------------------------------------------------------- a lost webhook

def test_a_yookassa_payment_whose_webhook_was_lost_is_credited_once(
        runtime, alice, kassa_control, emu_client, no_webhooks):
    payment_id, provider_id, created = _started(runtime, alice, "yookassa", 25000)
    kassa_control.pay(provider_id)
    assert poll.run(runtime, now=created + timedelta(seconds=61)) == 1
    assert payment_row(runtime.engine, payment_id).status == "succeeded"
    run_jobs(runtime)
    assert len(_received(emu_client)) == 1
    # Settled: later runs do not ask again, credit nothing more, tell nothing more.
    mark = _last_request(kassa_control)
    for minutes in (5, 30, 120):
        assert poll.run(runtime, now=created + timedelta(minutes=minutes)) == 0
    run_jobs(runtime)
    assert _asked(kassa_control, provider_id, mark) == 0
    assert credits(runtime.engine) == 1 and billing.balance(runtime.engine, alice) == 25000
    assert len(_received(emu_client)) == 1


def test_a_crypto_pay_invoice_whose_update_was_lost_is_credited_once(
        runtime, alice, cryptopay_control, emu_client, no_webhooks):
    payment_id, invoice_id, created = _started(runtime, alice, "cryptobot", 5000)
    cryptopay_control.pay(int(invoice_id), asset="TON")
    assert poll.run(runtime, now=created + timedelta(seconds=61)) == 1
    assert poll.run(runtime, now=created + timedelta(minutes=10)) == 0
    run_jobs(runtime)
    assert payment_row(runtime.engine, payment_id).status == "succeeded"
    assert credits(runtime.engine) == 1 and len(_received(emu_client)) == 1


def test_one_getinvoices_call_asks_about_every_due_invoice(runtime, alice, cryptopay_control,
                                                          no_webhooks):
    started = [_started(runtime, alice, "cryptobot", 1000 + n) for n in range(3)]
    mark = _last_request(cryptopay_control)
    assert poll.run(runtime, now=started[-1][2] + timedelta(seconds=61)) == 3
    [call] = cryptopay_control.requests("getInvoices", mark)
    assert sorted(call["invoice_ids"].split(",")) == sorted(i for _, i, _ in started)


def test_an_unpaid_payment_stays_pending(runtime, alice, kassa_control, no_webhooks):
    payment_id, provider_id, created = _started(runtime, alice, "yookassa")
    assert poll.run(runtime, now=created + timedelta(seconds=61)) == 1
    assert payment_row(runtime.engine, payment_id).status == "pending"
    assert credits(runtime.engine) == 0


def test_a_payment_is_not_asked_before_its_first_minute(runtime, alice, kassa_control,
                                                        no_webhooks):
    _, provider_id, created = _started(runtime, alice, "yookassa")
    assert poll.run(runtime, now=created + timedelta(seconds=30)) == 0
    assert _asked(kassa_control, provider_id) == 0


# ---------------------------------------------------------------- racing the others

def test_the_poller_racing_a_late_webhook_and_the_button_credits_once(
        web, alice, kassa_control, emu_client):
    runtime = web.runtime
    kassa_control.set_webhook(enabled=False)
    payment_id, provider_id, created = _started(runtime, alice, "yookassa", 7000)
    kassa_control.pay(provider_id)
    kassa_control.set_webhook(enabled=True)
    start = threading.Barrier(3)
    button: list[bool] = []

    def poller() -> None:
        start.wait()
        poll.run(runtime, now=created + timedelta(seconds=61))

    def late_webhook() -> None:
        start.wait()
        kassa_control.resend(provider_id)

    def press() -> None:
        start.wait()
        completion = service.check_payment(runtime, payment_id, alice)
        button.append(bool(completion and completion.credited))

    threads = [threading.Thread(target=t) for t in (poller, late_webhook, press)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    kassa_control.wait_delivered(provider_id)
    run_jobs(runtime)
    assert credits(runtime.engine) == 1 and billing.balance(runtime.engine, alice) == 7000
    # The button answers in place; a credit by the webhook or the poller is a notice, once.
    assert len(_received(emu_client)) == (0 if button == [True] else 1)


# ---------------------------------------------------------------- the provider is down

def test_yookassa_5xx_changes_nothing_and_the_next_run_asks_again(
        runtime, alice, kassa_control, emu_client, no_webhooks):
    first, first_id, _ = _started(runtime, alice, "yookassa", 1000)
    second, second_id, created = _started(runtime, alice, "yookassa", 2000)
    for provider_id in (first_id, second_id):
        kassa_control.pay(provider_id)
    fault = kassa_control.add_fault("5xx", "get_payment")
    now = created + timedelta(seconds=61)
    poll.run(runtime, now=now)
    # The first question failed through the client's retries; the second was not asked.
    assert _asked(kassa_control, first_id) == 3 and _asked(kassa_control, second_id) == 0
    assert {payment_row(runtime.engine, p).status for p in (first, second)} == {"pending"}
    assert credits(runtime.engine) == 0
    kassa_control.clear_faults()
    assert fault["id"] and poll.run(runtime, now=now) == 2
    run_jobs(runtime)
    assert {payment_row(runtime.engine, p).status for p in (first, second)} == {"succeeded"}
    assert credits(runtime.engine) == 2 and len(_received(emu_client)) == 2


@pytest.mark.parametrize("mode", ["5xx", "timeout", "outage"])
def test_crypto_pay_down_changes_nothing_and_the_next_run_asks_again(
        runtime, alice, cryptopay_control, no_webhooks, mode):
    payment_id, invoice_id, created = _started(runtime, alice, "cryptobot", 3000)
    cryptopay_control.pay(int(invoice_id), asset="TON")
    cryptopay_control.add_fault(mode, "getInvoices")
    now = created + timedelta(seconds=61)
    poll.run(runtime, now=now)
    assert payment_row(runtime.engine, payment_id).status == "pending"
    assert credits(runtime.engine) == 0
    cryptopay_control.clear_faults()
    poll.run(runtime, now=now)
    assert payment_row(runtime.engine, payment_id).status == "succeeded"


def test_a_run_stops_asking_when_its_time_is_spent(runtime, alice, kassa_control,
                                                   no_webhooks):
    _, provider_id, created = _started(runtime, alice, "yookassa")
    assert poll.run(runtime, now=created + timedelta(seconds=61), budget=0) == 0
    assert _asked(kassa_control, provider_id) == 0
    assert poll.run(runtime, now=created + timedelta(seconds=62)) == 1


# ---------------------------------------------------------------- closed at the provider

def test_an_expired_crypto_pay_invoice_is_closed(runtime, alice, cryptopay_control,
                                                 no_webhooks):
    payment_id, invoice_id, created = _started(runtime, alice, "cryptobot")
    cryptopay_control.expire(int(invoice_id))
    assert poll.run(runtime, now=created + timedelta(seconds=61)) == 1
    row = payment_row(runtime.engine, payment_id)
    assert (row.status, row.failure_reason) == ("canceled", "expired")
    assert credits(runtime.engine) == 0


def test_a_yookassa_payment_canceled_there_is_closed(runtime, alice, kassa_control,
                                                     no_webhooks):
    payment_id, provider_id, created = _started(runtime, alice, "yookassa")
    kassa_control.cancel(provider_id, "expired_on_confirmation")
    assert poll.run(runtime, now=created + timedelta(minutes=2)) == 1
    row = payment_row(runtime.engine, payment_id)
    assert (row.status, row.failure_reason) == ("canceled", "expired_on_confirmation")


# ---------------------------------------------------------------- backoff and windows

def test_a_payment_checked_recently_is_not_asked_again_before_its_time(
        runtime, alice, kassa_control, no_webhooks):
    _, provider_id, created = _started(runtime, alice, "yookassa")
    checks = []
    # Asked at 1 min; then after as long as its age: 2, 4, 8, 16 min; then every 15 min.
    for seconds in range(60, 60 * 50, 30):
        mark = _last_request(kassa_control)
        poll.run(runtime, now=created + timedelta(seconds=seconds))
        if _asked(kassa_control, provider_id, mark):
            checks.append(seconds // 60)
    assert checks == [1, 2, 4, 8, 16, 31, 46]


def test_the_schedule_survives_a_restart(runtime, alice, kassa_control, no_webhooks):
    """The next check time is in Redis, not in the process: a new process (a fresh run of
    the job) keeps it."""
    payment_id, provider_id, created = _started(runtime, alice, "yookassa")
    poll.run(runtime, now=created + timedelta(minutes=8))
    mark = _last_request(kassa_control)
    assert runtime.redis.zscore(poll.SCHEDULE_KEY, str(payment_id)) == \
        (created + timedelta(minutes=16)).timestamp()
    assert poll.run(runtime, now=created + timedelta(minutes=15)) == 0
    assert poll.run(runtime, now=created + timedelta(minutes=16, seconds=1)) == 1
    assert _asked(kassa_control, provider_id, mark) == 1


def test_payments_past_the_providers_window_are_left_alone(runtime, alice, kassa_control,
                                                            cryptopay_control, no_webhooks):
    _, kassa_id, created = _started(runtime, alice, "yookassa")
    _, invoice_id, _ = _started(runtime, alice, "cryptobot")
    expires = timedelta(seconds=runtime.settings.cryptobot_invoice_expires_in)
    mark = _last_request(cryptopay_control)
    assert poll.run(runtime, now=created + expires + poll.GRACE + timedelta(minutes=1)) == 1
    assert cryptopay_control.requests("getInvoices", mark) == []
    assert poll.run(runtime, now=created + poll.YOOKASSA_WINDOW + timedelta(minutes=1)) == 0
    assert _asked(kassa_control, kassa_id) == 1


def test_the_batch_bounds_one_run_and_the_longest_waiting_go_first(
        runtime, alice, kassa_control, monkeypatch, no_webhooks):
    monkeypatch.setattr(runtime, "settings", replace(runtime.settings, payment_poll_batch=2))
    started = [_started(runtime, alice, "yookassa", 1000 + n) for n in range(3)]
    now = started[-1][2] + timedelta(seconds=61)
    assert poll.run(runtime, now=now) == 2
    assert [_asked(kassa_control, p) for _, p, _ in started] == [1, 1, 0]
    assert poll.run(runtime, now=now) == 1
    assert [_asked(kassa_control, p) for _, p, _ in started] == [1, 1, 1]


def test_unconfigured_providers_and_payments_never_created_there_are_skipped(
        runtime, alice, monkeypatch, kassa_control, no_webhooks):
    payment_id, _ = billing.create_payment(runtime.engine, alice, "yookassa", "balance_topup",
                                           1000, "RUB")
    created = payment_row(runtime.engine, payment_id).created_at
    assert poll.run(runtime, now=created + timedelta(minutes=2)) == 0
    _, provider_id, created = _started(runtime, alice, "yookassa")
    monkeypatch.setattr(runtime, "settings", replace(runtime.settings, yookassa_shop_id=None,
                                                     cryptobot_token=None))
    assert poll.run(runtime, now=created + timedelta(minutes=2)) == 0
    assert _asked(kassa_control, provider_id) == 0


# ---------------------------------------------------------------- settings

@pytest.mark.parametrize(("name", "value"), [
    ("PAYMENT_POLL_INTERVAL", "5"), ("PAYMENT_POLL_INTERVAL", "3601"),
    ("PAYMENT_POLL_INTERVAL", "soon"), ("PAYMENT_POLL_BATCH", "0"),
    ("PAYMENT_POLL_BATCH", "501"), ("PAYMENT_POLL_BATCH", "1e3")])
def test_bad_poll_settings_fail_naming_the_variable(database_url, redis_url, name, value):
    with pytest.raises(ConfigError, match=f"^{name} is invalid"):
        load_settings(make_env(database_url, redis_url, "http://127.0.0.1:1", **{name: value}))


def test_poll_settings_defaults(database_url, redis_url):
    settings = load_settings(make_env(database_url, redis_url, "http://127.0.0.1:1"))
    assert (settings.payment_poll_interval, settings.payment_poll_batch) == (60, 50)


# ---------------------------------------------------------------- refunds made at YooKassa

def test_a_refund_whose_notification_was_lost_is_applied_once(
        runtime, alice, kassa_control, emu_client, no_webhooks):
    """Refunded in YooKassa's dashboard while the notifications were lost: the poller lists
    the refunds once, applies this one through the webhook's path and tells the user once."""
    payment_id, provider_id, created = _started(runtime, alice, "yookassa", 10000)
    kassa_control.pay(provider_id)
    now = created + timedelta(seconds=61)
    poll.run(runtime, now=now)
    kassa_control.refund(provider_id, amount="40.00")
    mark = _last_request(kassa_control)
    poll.run(runtime, now=now + poll.REFUNDS_EVERY)
    assert billing.balance(runtime.engine, alice) == 6000
    assert payment_row(runtime.engine, payment_id).refunded_minor == 4000
    assert [r["endpoint"] for r in kassa_control.requests(since_id=mark)] == ["list_refunds"]
    # Recorded: a later listing applies nothing more; inside REFUNDS_EVERY nothing is listed.
    poll.run(runtime, now=now + poll.REFUNDS_EVERY + timedelta(minutes=1))
    poll.run(runtime, now=now + 2 * poll.REFUNDS_EVERY)
    run_jobs(runtime)
    assert billing.balance(runtime.engine, alice) == 6000
    assert len([r for r in kassa_control.requests(since_id=mark)
                if r["endpoint"] == "list_refunds"]) == 2
    refund_notices = [t for t in bot_texts(emu_client, ALICE_TG) if "Refund of" in t]
    assert len(refund_notices) == 1 and len(_received(emu_client)) == 1


def test_refunds_of_payments_that_are_not_ours_are_left_alone(runtime, alice, kassa,
                                                              kassa_control, no_webhooks):
    import uuid

    import requests

    from tests.payments.support import SECRET, SHOP_ID, alerts

    answer = requests.post(f"{kassa.api_url}/payments", auth=(SHOP_ID, SECRET), timeout=5,
                           headers={"Idempotence-Key": str(uuid.uuid4())},
                           json={"amount": {"value": "5.00", "currency": "RUB"},
                                 "capture": True, "metadata": {"order": "another shop app"},
                                 "confirmation": {"type": "redirect",
                                                  "return_url": "https://t.me/x"}})
    stranger = answer.json()["id"]
    kassa_control.pay(stranger)
    kassa_control.refund(stranger)
    _, _, created = _started(runtime, alice, "yookassa")
    poll.run(runtime, now=created + timedelta(seconds=61))
    assert alerts(runtime.engine, "refund") == []


def test_yookassa_down_while_listing_refunds_changes_nothing(runtime, alice, kassa_control,
                                                             no_webhooks):
    payment_id, provider_id, created = _started(runtime, alice, "yookassa", 10000)
    kassa_control.pay(provider_id)
    now = created + timedelta(seconds=61)
    poll.run(runtime, now=now)
    kassa_control.refund(provider_id)
    kassa_control.add_fault("5xx", "list_refunds")
    poll.run(runtime, now=now + poll.REFUNDS_EVERY)
    assert billing.balance(runtime.engine, alice) == 10000
    kassa_control.clear_faults()
    poll.run(runtime, now=now + poll.REFUNDS_EVERY + timedelta(seconds=1))  # not 10 min later
    assert billing.balance(runtime.engine, alice) == 0
    assert payment_row(runtime.engine, payment_id).status == "refunded"
