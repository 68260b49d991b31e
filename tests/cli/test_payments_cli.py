"""`habitbot payments …` against the provider emulators, real PostgreSQL and Redis: it asks the
provider first, credits through the exactly-once path, prints what it did, and fails with a
clear line and a non-zero code."""

from __future__ import annotations

import subprocess
import sys
import uuid
from io import StringIO

import pytest
import requests
from sqlalchemy import delete, update

from habitbot import cli
from habitbot.cli_payments import ProgressBar
from habitbot.models import Payment
from habitbot.payments import notify, service, stars
from habitbot.services import billing
from tests.payments.support import (
    ALICE_TG,
    SECRET,
    SHOP_ID,
    alerts,
    credits,
    payment_env,
    payment_row,
    run_jobs,
)


@pytest.fixture
def run(monkeypatch, capsys, database_url, redis_url, emulator, kassa, cryptopay, redis_conn):
    """`habitbot …` in-process with the payment environment: (exit code, stdout, stderr)."""
    for name, value in payment_env(database_url, redis_url, emulator.url, kassa,
                                   cryptopay).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli, "setup_logging", lambda program: None)

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def _top_up(runtime, user_id: int, amount: int = 10000) -> tuple[int, str]:
    started = service.start_payment(runtime, user_id, "yookassa", "balance_topup",
                                    amount_minor=amount)
    return started.payment_id, payment_row(runtime.engine, started.payment_id).provider_payment_id


def _bot_texts(emu_client, runtime) -> list[str]:
    """What the bot told Alice, once the notices the command queued have gone out."""
    run_jobs(runtime)
    return [m["text"] for m in emu_client.messages(ALICE_TG, sender="bot")]


# ---------------------------------------------------------------- complete

def test_complete_confirms_with_yookassa_and_credits_once(run, runtime, alice, kassa_control,
                                                          emu_client):
    kassa_control.set_webhook(enabled=False)  # the webhook never arrived
    payment_id, provider_id = _top_up(runtime, alice)
    kassa_control.pay(provider_id)
    code, out, _ = run("payments", "complete", "--provider", "yookassa", "--id", provider_id)
    assert code == 0
    assert out.strip() == (f"OK: yookassa confirms payment {payment_id}: credited "
                           "(top-up 100.00 ₽)")
    assert billing.balance(runtime.engine, alice) == 10000
    assert len(_bot_texts(emu_client, runtime)) == 1
    code, out, _ = run("payments", "complete", "--provider", "yookassa", "--payment",
                       str(payment_id))
    assert code == 0 and "already succeeded; nothing to do" in out
    assert credits(runtime.engine) == 1 and len(_bot_texts(emu_client, runtime)) == 1


def test_complete_refuses_an_unpaid_payment_unless_forced_with_a_reason(run, runtime, alice,
                                                                        kassa_control):
    payment_id, provider_id = _top_up(runtime, alice, 5000)
    code, _, err = run("payments", "complete", "--provider", "yookassa", "--id", provider_id)
    assert code == 1
    assert f"yookassa does not confirm payment {payment_id}" in err and "--force" in err
    code, _, err = run("payments", "complete", "--provider", "yookassa", "--id", provider_id,
                       "--force")
    assert code == 1 and "--force needs --reason" in err
    assert billing.balance(runtime.engine, alice) == 0
    code, out, _ = run("payments", "complete", "--provider", "yookassa", "--id", provider_id,
                       "--force", "--reason", "paid by bank transfer, ticket 77")
    assert code == 0 and "credited by force" in out and "ticket 77" in out
    assert billing.balance(runtime.engine, alice) == 5000
    row = payment_row(runtime.engine, payment_id)
    assert row.provider_data["operator_completion"]["reason"] == \
        "paid by bank transfer, ticket 77"
    assert alerts(runtime.engine, "without the provider's confirmation")


def test_complete_a_crypto_pay_invoice_by_our_id(run, runtime, alice, cryptopay_control):
    cryptopay_control.set_webhook(enabled=False)
    started = service.start_payment(runtime, alice, "cryptobot", "subscription", plan="year")
    invoice_id = int(payment_row(runtime.engine, started.payment_id).provider_payment_id)
    cryptopay_control.pay(invoice_id)
    code, out, _ = run("payments", "complete", "--provider", "cryptobot", "--payment",
                       str(started.payment_id))
    assert code == 0 and "premium year" in out
    assert billing.status(runtime.engine, alice).tier == "premium"


def test_complete_finds_a_row_that_lost_its_provider_id(run, runtime, alice, kassa_control):
    kassa_control.set_webhook(enabled=False)
    payment_id, provider_id = _top_up(runtime, alice, 3000)
    with runtime.engine.begin() as conn:
        conn.execute(update(Payment).where(Payment.id == payment_id)
                     .values(provider_payment_id=None))
    kassa_control.pay(provider_id)
    code, out, _ = run("payments", "complete", "--provider", "yookassa", "--id", provider_id)
    assert code == 0 and "credited" in out
    assert payment_row(runtime.engine, payment_id).provider_payment_id == provider_id


def test_complete_while_the_provider_is_down_refuses(run, runtime, alice, kassa_control):
    payment_id, provider_id = _top_up(runtime, alice)
    kassa_control.add_fault("5xx", "get_payment")
    code, _, err = run("payments", "complete", "--provider", "yookassa", "--id", provider_id)
    assert code == 1 and "does not confirm" in err and "unavailable" in err
    assert payment_row(runtime.engine, payment_id).status == "pending"


@pytest.mark.parametrize("args, code, message", [
    (["--provider", "yookassa", "--id", "2c5d3a2b-000f-5000-9000-1b2c3d4e5f60"], 1,
     "no yookassa payment '2c5d3a2b-000f-5000-9000-1b2c3d4e5f60' in our database"),
    (["--provider", "yookassa", "--id", "../refunds"], 2, "is not a YooKassa payment id"),
    (["--provider", "cryptobot", "--id", "12ab"], 2, "is not a Crypto Pay invoice id"),
    (["--provider", "yookassa", "--payment", "999"], 1, "no payment 999"),
    (["--provider", "yookassa"], 2, "give exactly one of --id"),
    (["--provider", "yookassa", "--id", "x", "--payment", "1"], 2, "give exactly one of"),
    (["--provider", "yookassa", "--payment", "1", "--reason", "x"], 2,
     "--reason is only used with --force"),
])
def test_complete_refuses_bad_targets_clearly(run, runtime, args, code, message):
    result = run("payments", "complete", *args)
    assert result[0] == code and message in result[2]


@pytest.mark.parametrize("args, message", [
    (["--provider", "yookassa", "--payment", "abc"], "not a payment id"),
    (["--provider", "yookassa", "--payment", "0"], "not a payment id"),
    (["--provider", "paypal", "--payment", "1"], "invalid choice"),
    (["--payment", "1"], "required: --provider"),
])
def test_complete_refuses_malformed_arguments(capsys, args, message):
    with pytest.raises(SystemExit) as exited:
        cli.main(["payments", "complete", *args])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_complete_refuses_another_providers_payment(run, runtime, alice):
    payment_id, _ = _top_up(runtime, alice)
    code, _, err = run("payments", "complete", "--provider", "cryptobot", "--payment",
                       str(payment_id))
    assert code == 1 and f"payment {payment_id} is a yookassa payment, not cryptobot" in err


def test_a_stars_payment_is_completed_only_by_force(run, runtime, alice):
    payment_id, _ = billing.create_payment(runtime.engine, alice, "stars", "subscription", 150,
                                           "XTR", plan="month")
    code, _, err = run("payments", "complete", "--provider", "stars", "--payment",
                       str(payment_id))
    assert code == 1 and "give the charge id" in err
    code, _, err = run("payments", "complete", "--provider", "stars", "--id", "no-such-charge")
    assert code == 1 and "no stars payment 'no-such-charge'" in err
    code, out, _ = run("payments", "complete", "--provider", "stars", "--payment",
                       str(payment_id), "--force", "--reason", "user sent the receipt")
    assert code == 0 and billing.status(runtime.engine, alice).tier == "premium"


def test_a_stars_charge_the_bot_missed_is_confirmed_by_telegram_then_credited(
        run, runtime, alice, emu_client):
    """The database was down when `successful_payment` arrived: Telegram has the charge, we
    have a pending payment. The operator completes it by the charge id alone."""
    payment_id = stars.send_invoice(runtime, alice, ALICE_TG, "month", title="Premium",
                                    description="Premium for a month", label="1 month")
    invoice = emu_client.messages(ALICE_TG, sender="bot")[-1]
    paid = emu_client.pay(ALICE_TG, invoice_message_id=invoice["message_id"])
    charge = paid.get("telegram_payment_charge_id") or paid.get("charge_id")
    assert payment_row(runtime.engine, payment_id).status == "pending"
    code, out, _ = run("payments", "complete", "--provider", "stars", "--id", charge)
    assert code == 0 and "credited" in out, out
    assert payment_row(runtime.engine, payment_id).status == "succeeded"
    assert billing.status(runtime.engine, alice).tier == "premium"
    code, out, _ = run("payments", "complete", "--provider", "stars", "--id", charge)
    assert code == 0 and "already succeeded" in out  # once


# ---------------------------------------------------------------- reconcile

def _kassa_direct(kassa, amount: str, metadata: dict) -> str:
    response = requests.post(f"{kassa.api_url}/payments", auth=(SHOP_ID, SECRET), timeout=5,
                             headers={"Idempotence-Key": str(uuid.uuid4())},
                             json={"amount": {"value": amount, "currency": "RUB"},
                                   "capture": True, "metadata": metadata,
                                   "confirmation": {"type": "redirect",
                                                    "return_url": "https://t.me/x"}})
    response.raise_for_status()
    return response.json()["id"]


def test_reconcile_reports_then_fixes(run, runtime, alice, kassa, kassa_control,
                                      cryptopay_control, emu_client):
    kassa_control.set_webhook(enabled=False)
    cryptopay_control.set_webhook(enabled=False)
    paid_id, paid = _top_up(runtime, alice, 1000)
    kassa_control.pay(paid)
    canceled_id, canceled = _top_up(runtime, alice, 2000)
    kassa_control.cancel(canceled)
    _open_id, _open = _top_up(runtime, alice, 3000)
    crypto = service.start_payment(runtime, alice, "cryptobot", "balance_topup",
                                   amount_minor=4000)
    cryptopay_control.pay(int(payment_row(runtime.engine, crypto.payment_id)
                              .provider_payment_id))
    stranger = _kassa_direct(kassa, "5.00", {"order": "not ours"})
    kassa_control.pay(stranger)

    code, out, err = run("payments", "reconcile", "--hours", "1")
    assert code == 1 and "checked 4 payment(s)" in out
    assert f"DIFF yookassa {paid} (payment {paid_id}): ours pending, provider succeeded" in out
    assert f"DIFF yookassa {canceled} (payment {canceled_id}): ours pending, provider " \
           "canceled" in out
    assert "ours pending, provider succeeded — paid at the provider" in out
    assert f"DIFF yookassa {stranger} (no payment of ours): ours no row" in out
    assert billing.balance(runtime.engine, alice) == 0  # a report changes nothing

    code, out, err = run("payments", "reconcile", "--hours", "1", "--fix")
    assert "[fixed: credited]" in out and "[fixed: canceled]" in out
    assert code == 1 and "1 need attention" in err  # the stranger stays for a human
    assert billing.balance(runtime.engine, alice) == 5000
    assert payment_row(runtime.engine, canceled_id).status == "canceled"
    assert len(_bot_texts(emu_client, runtime)) == 2

    code, out, _ = run("payments", "reconcile", "--hours", "1", "--fix")
    assert out.count("DIFF") == 1 and credits(runtime.engine) == 2


def test_reconcile_flags_a_credit_the_provider_does_not_confirm(run, runtime, alice):
    payment_id, provider_id = _top_up(runtime, alice, 1500)
    billing.complete_payment(runtime.engine, payment_id, 1500, "RUB")  # wrongly, by hand
    code, out, _ = run("payments", "reconcile", "--fix")
    assert code == 1
    assert "ours succeeded, provider pending — CREDITED HERE BUT NOT PAID" in out
    assert billing.balance(runtime.engine, alice) == 1500  # never taken back automatically


def test_reconcile_applies_refunds_it_missed(run, runtime, alice, kassa_control):
    payment_id, provider_id = _top_up(runtime, alice, 8000)
    kassa_control.pay(provider_id)
    kassa_control.set_webhook(enabled=False)
    billing.complete_payment(runtime.engine, payment_id, 8000, "RUB", provider_id)
    kassa_control.refund(provider_id, amount="20.00")
    code, out, _ = run("payments", "reconcile", "--fix")
    assert code == 0 and "[fixed: 1 refund(s) applied]" in out
    assert billing.balance(runtime.engine, alice) == 6000


def test_reconcile_with_nothing_to_do(run, runtime):
    code, out, _ = run("payments", "reconcile", "--since", "2026-01-01")
    assert code == 0 and "OK: no differences" in out


def test_reconcile_with_a_provider_down_fails(run, runtime, alice, kassa_control):
    _top_up(runtime, alice)
    kassa_control.add_fault("5xx")
    code, out, err = run("payments", "reconcile")
    assert code == 1 and "ERROR payment" in out and "provider error" in err


@pytest.mark.parametrize("args, message", [(["--hours", "-1"], "hours must be within"),
                                           (["--hours", "x"], "not a number of hours"),
                                           (["--since", "yesterday"], "not an ISO date"),
                                           (["--since", "2026-01-01", "--hours", "2"],
                                            "not allowed with")])
def test_reconcile_refuses_bad_windows(run, capsys, args, message):
    with pytest.raises(SystemExit) as exited:
        cli.main(["payments", "reconcile", *args])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_progress_bar_only_on_a_terminal():
    class Tty(StringIO):
        def isatty(self) -> bool:
            return True

    quiet, loud = StringIO(), Tty()
    for stream in (quiet, loud):
        bar = ProgressBar(stream, width=10)
        for done in range(1, 5):
            bar(done, 4)
    assert quiet.getvalue() == ""
    assert loud.getvalue().endswith("\r[##########] 4/4\n")


# ---------------------------------------------------------------- refund and show

def test_refund_yookassa_partially_then_the_rest(run, runtime, alice, kassa_control,
                                                 emu_client):
    kassa_control.set_webhook(enabled=False)
    payment_id, provider_id = _top_up(runtime, alice, 10000)
    kassa_control.pay(provider_id)
    service.check_payment(runtime, payment_id, alice)
    code, out, _ = run("payments", "refund", "--provider", "yookassa", "--id", provider_id,
                       "--amount", "40.00", "--reason", "asked by the user")
    assert code == 0 and "refunded 40.00 ₽" in out and "40.00 ₽ taken from the balance" in out
    assert billing.balance(runtime.engine, alice) == 6000
    assert [r["amount"]["value"] for r in kassa_control.refunds(provider_id)] == ["40.00"]
    code, out, _ = run("payments", "refund", "--provider", "yookassa", "--payment",
                       str(payment_id))
    assert code == 0 and "refunded 60.00 ₽" in out
    assert payment_row(runtime.engine, payment_id).status == "refunded"
    code, _, err = run("payments", "refund", "--provider", "yookassa", "--payment",
                       str(payment_id))
    assert code == 1 and "already refunded in full" in err
    assert any(t.startswith("↩️ Refund of 40.00 ₽") for t in _bot_texts(emu_client, runtime))


@pytest.mark.parametrize("amount, message", [("0", "must be positive"),
                                             ("100.01", "within 1..10000"),
                                             ("1.234", "is not an amount in RUB"),
                                             ("ten", "is not an amount in RUB")])
def test_refund_refuses_bad_amounts(run, runtime, alice, amount, message):
    payment_id, _ = _top_up(runtime, alice, 10000)
    billing.complete_payment(runtime.engine, payment_id, 10000, "RUB")
    code, _, err = run("payments", "refund", "--provider", "yookassa", "--payment",
                       str(payment_id), "--amount", amount)
    assert code in (1, 2) and message in err
    assert billing.balance(runtime.engine, alice) == 10000


def test_refund_of_an_unpaid_payment_is_refused(run, runtime, alice):
    payment_id, _ = _top_up(runtime, alice)
    code, _, err = run("payments", "refund", "--provider", "yookassa", "--payment",
                       str(payment_id))
    assert code == 1 and "only paid payments can be refunded" in err


def test_refund_crypto_pay_explains_there_is_no_api(run, runtime, alice):
    started = service.start_payment(runtime, alice, "cryptobot", "balance_topup",
                                    amount_minor=1000)
    billing.complete_payment(runtime.engine, started.payment_id, 1000, "RUB")
    code, _, err = run("payments", "refund", "--provider", "cryptobot", "--payment",
                       str(started.payment_id))
    assert code == 1 and "Crypto Pay has no refund API" in err
    assert billing.balance(runtime.engine, alice) == 1000


def _paid_stars_month(runtime, alice, emu_client) -> tuple[int, str]:
    """Alice pays a month in Stars through the emulator; (our payment id, Telegram's charge)."""
    payment_id = stars.send_invoice(runtime, alice, ALICE_TG, "month", title="Premium",
                                    description="Premium for a month", label="1 month")
    invoice = emu_client.messages(ALICE_TG, sender="bot")[-1]
    paid = emu_client.pay(ALICE_TG, invoice_message_id=invoice["message_id"])
    charge = paid.get("telegram_payment_charge_id") or paid.get("charge_id")
    billing.complete_payment(runtime.engine, payment_id, 150, "XTR", charge)
    return payment_id, charge


def test_refund_stars_through_the_bot_api(run, runtime, alice, emu_client):
    payment_id, charge = _paid_stars_month(runtime, alice, emu_client)
    code, out, _ = run("payments", "refund", "--provider", "stars", "--id", charge)
    assert code == 0 and "refunded 150 ⭐" in out
    assert payment_row(runtime.engine, payment_id).status == "refunded"
    assert billing.status(runtime.engine, alice).tier == "free"
    code, _, err = run("payments", "refund", "--provider", "stars", "--payment",
                       str(payment_id), "--amount", "10")
    assert code == 1


def test_refund_during_the_trial_says_the_trial_goes_on(run, runtime, alice, emu_client):
    trial_ends = billing.start_trial(runtime.engine, alice)
    _, charge = _paid_stars_month(runtime, alice, emu_client)
    code, out, _ = run("payments", "refund", "--provider", "stars", "--id", charge)
    assert code == 0 and "refunded 150 ⭐" in out
    assert f"the trial goes on until {trial_ends:%Y-%m-%d %H:%M} UTC" in out
    assert billing.status(runtime.engine, alice) == billing.PremiumStatus("trial", trial_ends,
                                                                          False)


def test_show_prints_the_whole_story(run, runtime, alice):
    payment_id, provider_id = _top_up(runtime, alice, 10000)
    billing.complete_payment(runtime.engine, payment_id, 10000, "RUB")
    billing.apply_refund(runtime.engine, payment_id, "rf-show", 2500, "partial")
    code, out, _ = run("payments", "show", str(payment_id))
    assert code == 0
    assert f"payment {payment_id}: yookassa balance_topup" in out
    assert "status          succeeded" in out and "refunded        25.00 ₽" in out
    assert f"provider id     {provider_id}" in out
    assert "balance topup     +10000 → 10000 RUB" in out
    assert "balance refund    -2500 → 7500 RUB" in out
    assert "refund          rf-show 25.00 ₽ succeeded" in out
    code, out2, _ = run("payments", "show", "--provider", "yookassa", "--id", provider_id)
    assert code == 0 and out2 == out


def test_show_refuses_unknown_and_malformed_ids(run, runtime, capsys):
    code, _, err = run("payments", "show", "4242")
    assert code == 1 and "no payment 4242" in err
    code, _, err = run("payments", "show")
    assert code == 2 and "give a payment id, or --provider and --id" in err
    with pytest.raises(SystemExit) as exited:
        cli.main(["payments", "show", "-3"])
    assert exited.value.code == 2


def test_dead_database_is_one_clear_line(run, runtime, monkeypatch, pg_proxy, database_url):
    monkeypatch.setenv("DATABASE_URL", pg_proxy.url_for(database_url))
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "1")
    pg_proxy.set_mode("refuse")
    for args in (["show", "1"], ["complete", "--provider", "yookassa", "--payment", "1"],
                 ["reconcile"]):
        code, out, err = run("payments", *args)
        assert code == 1
        assert err.strip() == ("FAIL: database unreachable: check DATABASE_URL and that "
                               "PostgreSQL is running")


def test_every_payments_command_has_help():
    for action in ("complete", "reconcile", "refund", "show"):
        result = subprocess.run([sys.executable, "-m", "habitbot.cli", "payments", action,
                                 "--help"], capture_output=True, text=True, timeout=60,
                                env={"PATH": "/usr/bin:/bin"})
        assert result.returncode == 0 and f"usage: habitbot payments {action}" in result.stdout


# ---------------------------------------------------------------- after a restore

def _lose(engine, payment_id: int) -> None:
    """What restoring a backup older than the payment does to its row."""
    with engine.begin() as conn:
        conn.execute(delete(Payment).where(Payment.id == payment_id))


def test_complete_recreates_a_paid_payment_the_restore_lost(run, runtime, alice,
                                                           kassa_control, emu_client):
    kassa_control.set_webhook(enabled=False)
    payment_id, provider_id = _top_up(runtime, alice, 2500)
    _lose(runtime.engine, payment_id)
    kassa_control.pay(provider_id)
    code, out, _ = run("payments", "complete", "--provider", "yookassa", "--id", provider_id)
    assert code == 0 and "yookassa confirms payment" in out and "credited" in out, out
    assert billing.balance(runtime.engine, alice) == 2500
    row = billing.find_payment(runtime.engine, "yookassa", provider_id)
    assert row is not None and row.status == "succeeded" and row.user_id == alice
    assert alerts(runtime.engine, f"(it was {payment_id})")
    code, out, _ = run("payments", "complete", "--provider", "yookassa", "--id", provider_id)
    assert code == 0 and "already succeeded; nothing to do" in out
    assert credits(runtime.engine) == 1 and len(_bot_texts(emu_client, runtime)) == 1


def test_complete_does_not_recreate_an_unpaid_lost_payment(run, runtime, alice):
    payment_id, provider_id = _top_up(runtime, alice, 2500)
    _lose(runtime.engine, payment_id)
    code, _, err = run("payments", "complete", "--provider", "yookassa", "--id", provider_id)
    assert code == 1 and f"no yookassa payment '{provider_id}' in our database" in err
    assert billing.find_payment(runtime.engine, "yookassa", provider_id) is None


def test_reconcile_fix_recreates_what_the_restore_lost(run, runtime, alice, kassa,
                                                      kassa_control, cryptopay_control,
                                                      emu_client):
    kassa_control.set_webhook(enabled=False)
    cryptopay_control.set_webhook(enabled=False)
    card_id, card = _top_up(runtime, alice, 1000)
    coin = service.start_payment(runtime, alice, "cryptobot", "subscription", plan="month")
    invoice_id = int(payment_row(runtime.engine, coin.payment_id).provider_payment_id)
    kassa_control.pay(card)
    cryptopay_control.pay(invoice_id)
    older = _kassa_direct(kassa, "7.00", {"payment_id": "99"})  # our id only: too little
    kassa_control.pay(older)
    for lost in (card_id, coin.payment_id):
        _lose(runtime.engine, lost)

    code, out, _ = run("payments", "reconcile", "--hours", "1")
    assert code == 1 and out.count("missing here") == 2, out
    assert f"it was our payment {card_id}" in out and "--fix re-creates it" in out
    assert f"DIFF yookassa {older} (payment 99): ours no row" in out

    code, out, err = run("payments", "reconcile", "--hours", "1", "--fix")
    assert out.count("[fixed: credited]") == 2, out
    assert code == 1 and "1 need attention" in err  # the record that cannot say whose
    assert billing.balance(runtime.engine, alice) == 1000
    assert billing.status(runtime.engine, alice).tier == "premium"
    assert len(_bot_texts(emu_client, runtime)) == 2

    code, out, _ = run("payments", "reconcile", "--hours", "1", "--fix")
    assert out.count("DIFF") == 1 and credits(runtime.engine) == 1


def test_reconcile_finds_stars_charges_not_credited_here(run, runtime, alice, emu_client):
    """One charge the bot never recorded (the database was down), one whose row a restore
    lost: `reconcile` lists both from Telegram's transactions, `--fix` credits each once."""
    missed = stars.send_invoice(runtime, alice, ALICE_TG, "month", title="Premium",
                                description="Premium for a month", label="1 month")
    emu_client.pay(ALICE_TG, invoice_message_id=emu_client.messages(
        ALICE_TG, sender="bot")[-1]["message_id"])
    lost = stars.send_invoice(runtime, alice, ALICE_TG, "year", title="Premium",
                              description="Premium for a year", label="1 year")
    emu_client.pay(ALICE_TG, invoice_message_id=emu_client.messages(
        ALICE_TG, sender="bot")[-1]["message_id"])
    _lose(runtime.engine, lost)

    code, out, _ = run("payments", "reconcile", "--hours", "1")
    assert code == 1 and out.count("DIFF stars ") == 2, out
    assert f"(payment {missed}): ours pending, provider succeeded" in out
    assert f"it was our payment {lost}" in out

    code, out, _ = run("payments", "reconcile", "--hours", "1", "--fix")
    assert code == 0 and out.count("[fixed: credited]") == 2, out
    status = billing.status(runtime.engine, alice)
    assert status.tier == "premium"
    assert payment_row(runtime.engine, missed).status == "succeeded"
    code, out, _ = run("payments", "reconcile", "--hours", "1")
    assert code == 0 and "OK: no differences" in out, out
    assert [p["refunded"] for p in emu_client.payments()] == [False, False]


# ---------------------------------------------------------------- Stars transactions, paged once

def _star_transaction_calls(emu_client) -> int:
    return int(emu_client.stats()["requests"].get("getStarTransactions", 0))


def test_reconcile_fix_pages_telegrams_transactions_once_for_many_charges(
        run, runtime, alice, emu_client, monkeypatch):
    """Six charges the bot never recorded, two per page: --fix credits each once and reads
    Telegram's transactions once (four pages, the last one empty), not once per charge."""
    monkeypatch.setattr(stars, "TRANSACTIONS_PAGE", 2)
    missed = []
    for _ in range(6):
        payment_id, _ = billing.create_payment(runtime.engine, alice, "stars", "subscription",
                                               billing.PRICES["month"]["XTR"], "XTR",
                                               plan="month")
        emu_client.pay(ALICE_TG, invoice_payload=stars.invoice_payload(payment_id),
                       currency="XTR", total_amount=billing.PRICES["month"]["XTR"])
        missed.append(payment_id)
    before = _star_transaction_calls(emu_client)
    code, out, _ = run("payments", "reconcile", "--hours", "1", "--fix")
    assert code == 0 and out.count("[fixed: credited]") == 6, out
    assert _star_transaction_calls(emu_client) - before == 4
    assert {payment_row(runtime.engine, p).status for p in missed} == {"succeeded"}


def test_complete_by_charge_id_pages_telegrams_transactions_once(run, runtime, alice,
                                                                emu_client):
    payment_id, _ = billing.create_payment(runtime.engine, alice, "stars", "subscription",
                                           billing.PRICES["month"]["XTR"], "XTR", plan="month")
    charge = emu_client.pay(ALICE_TG, invoice_payload=stars.invoice_payload(payment_id),
                            currency="XTR", total_amount=billing.PRICES["month"]["XTR"])
    before = _star_transaction_calls(emu_client)
    code, out, _ = run("payments", "complete", "--provider", "stars", "--id",
                       charge["telegram_payment_charge_id"])
    assert code == 0 and "credited" in out, out
    assert _star_transaction_calls(emu_client) - before == 1


def test_reconcile_fix_lists_yookassa_once_instead_of_asking_per_payment(
        run, runtime, alice, kassa_control):
    """Five top-ups paid while the webhooks were lost: --fix credits each once from one
    listing of YooKassa's payments, with no request per payment."""
    kassa_control.set_webhook(enabled=False)
    paid = []
    for n in range(5):
        payment_id, provider_id = _top_up(runtime, alice, 1000 + n)
        kassa_control.pay(provider_id)
        paid.append(payment_id)
    mark = kassa_control.requests()[-1]["id"]
    code, out, _ = run("payments", "reconcile", "--hours", "1", "--fix")
    assert code == 0 and out.count("[fixed: credited]") == 5, out
    asked = [r["endpoint"] for r in kassa_control.requests(since_id=mark)]
    assert asked == ["list_payments"], asked
    assert {payment_row(runtime.engine, p).status for p in paid} == {"succeeded"}
    assert credits(runtime.engine) == 5 and notify.pending(runtime.redis) == 5  # one each


def test_reconcile_pages_through_every_paid_crypto_pay_invoice(run, runtime, alice,
                                                              cryptopay_control, monkeypatch):
    """Three paid invoices whose rows a restore lost, two per page of getInvoices: all three
    are found (one page used to be all that was read)."""
    from habitbot.payments import cryptobot

    monkeypatch.setattr(cryptobot, "PAID_PAGE", 2)
    cryptopay_control.set_webhook(enabled=False)
    lost = []
    for n in range(3):
        started = service.start_payment(runtime, alice, "cryptobot", "balance_topup",
                                        amount_minor=1000 + n)
        cryptopay_control.pay(int(payment_row(runtime.engine, started.payment_id)
                                  .provider_payment_id))
        lost.append(started.payment_id)
    for payment_id in lost:
        _lose(runtime.engine, payment_id)
    code, out, _ = run("payments", "reconcile", "--hours", "1")
    assert code == 1 and out.count("missing here") == 3, out
    code, out, _ = run("payments", "reconcile", "--hours", "1", "--fix")
    assert code == 0 and out.count("[fixed: credited]") == 3, out
    assert billing.balance(runtime.engine, alice) == 3003


def test_reconcile_lists_yookassa_refunds_once_for_every_payment_it_fixes(
        run, runtime, alice, kassa_control):
    kassa_control.set_webhook(enabled=False)
    for amount in (8000, 9000, 10000):
        payment_id, provider_id = _top_up(runtime, alice, amount)
        kassa_control.pay(provider_id)
        billing.complete_payment(runtime.engine, payment_id, amount, "RUB", provider_id)
        kassa_control.refund(provider_id, amount="20.00")
    mark = kassa_control.requests()[-1]["id"]
    code, out, _ = run("payments", "reconcile", "--fix")
    assert code == 0 and out.count("[fixed: 1 refund(s) applied]") == 3, out
    assert billing.balance(runtime.engine, alice) == 27000 - 6000
    asked = [r["endpoint"] for r in kassa_control.requests(since_id=mark)]
    assert asked == ["list_payments", "list_refunds"], asked
