"""Drills of the payment incidents and procedures: a webhook not delivered (1.4), a provider
down when a payment is created (1.5), a duplicated webhook (1.8), restoring the database from
a backup with reconciliation (2.2), and completing a payment by hand (2.3).

Users pay as in the chat: /premium, top up, an amount, a provider, then the provider's pay
page (the emulator); the providers' webhooks reach the stack's gunicorn."""

from __future__ import annotations

from drills.actors import CRYPTOBOT, YOOKASSA, Payer, Started
from drills.core import Outcome, drill
from drills.harness import DrillStack, Lab
from tests.e2e.stack import wait_until

CTL = "supervisorctl -c supervisord.conf"
TOP_UP = 10000  # 100.00 RUB, the amount every drill tops up by
YOOKASSA_CHECK = ("curl -s -o /dev/null -w '%{http_code}\\n' -u \"$YOOKASSA_SHOP_ID:"
                  "$YOOKASSA_SECRET_KEY\" \"$YOOKASSA_API_URL/payments?limit=1\"")


def _credited(payer: Payer, started: Started, timeout: float = 45) -> None:
    wait_until(lambda: payer.credits(started) >= 1, timeout,
               f"payment {started.payment_id} credited")


def _settle_count(out: Outcome, payer: Payer, payments: list[Started]) -> None:
    """lost = payments paid at the provider and not credited; more than one credit for a
    payment (or a wrong balance) fails the recovery."""
    credits = {s.payment_id: payer.credits(s) for s in payments}
    out.lost = sum(1 for n in credits.values() if n == 0)
    doubled = {p: n for p, n in credits.items() if n > 1}
    if doubled:
        out.note(f"count: credited more than once: {doubled}")
        out.recovered = False
    expected = TOP_UP * sum(1 for n in credits.values() if n)
    if payer.balance() != expected:
        out.note(f"count: balance {payer.balance()} != {expected}")
        out.recovered = False


def _show(stack: DrillStack, payment_id: int) -> str:
    return stack.sh_ok(f"habitbot payments show {payment_id}")


@drill("1.4", "payment webhook not delivered", "1.4")
def webhook_not_delivered(lab: Lab, out: Outcome) -> None:
    """YooKassa starts sending notifications from an address missing in
    YOOKASSA_TRUSTED_IPS: each one is refused until the list is fixed."""
    with lab.stack("1.4", YOOKASSA_TRUSTED_IPS="127.0.0.2/32") as stack:
        lab.kassa_ctl.set_webhook(source_address="127.0.0.3")
        alice = Payer(stack, 7004, "Alice")
        alice.onboard()
        started: Started | None = None
        with out.phase("symptom"):
            started = alice.started(alice.top_up(YOOKASSA))
            alice.pay(started)
            wait_until(lambda: stack.alerts("[WARNING] payments yookassa: a notification from "
                                            "127.0.0.3 was refused"), 30,
                       "alert [WARNING] payments yookassa: a notification … was refused")
            assert stack.logged("web", "YooKassa notification from an untrusted address")
            deliveries = lab.kassa_ctl.wait_settled(started.provider_id, timeout=30)
            assert {d["state"] for d in deliveries} == {"failed"}, deliveries
            assert "status          pending" in _show(stack, started.payment_id)
            report = stack.sh("habitbot payments reconcile")
            assert report.returncode == 1 and "paid at the provider, not credited here" \
                in report.stdout, report.stdout
            assert alice.credits(started) == 0
        with out.phase("recovery"):
            assert started is not None
            stack.systemctl_restart(YOOKASSA_TRUSTED_IPS="127.0.0.2/32,127.0.0.3/32")
            fixed = stack.sh_ok("habitbot payments reconcile --fix")
            assert "[fixed: credited]" in fixed, fixed
            assert "status          succeeded" in _show(stack, started.payment_id)
            wait_until(lambda: alice.notices() == 1, 30, "the user told once")
            assert "OK: no differences" in stack.sh_ok("habitbot payments reconcile")
            # YooKassa's next retry now gets through, and changes nothing.
            lab.kassa_ctl.resend(started.provider_id)
            lab.kassa_ctl.wait_delivered(started.provider_id, timeout=30)
            wait_until(lambda: stack.logged("web", f"Idempotent: payment {started.payment_id} "
                                                   "already completed"), 30,
                       "web log: Idempotent: payment … already completed")
        with out.phase("count"):
            _settle_count(out, alice, [started] if started else [])


@drill("1.5", "payment provider down on create", "1.5")
def provider_down_on_create(lab: Lab, out: Outcome) -> None:
    with lab.stack("1.5") as stack:
        alice = Payer(stack, 7005, "Alice")
        alice.onboard()
        paid: list[Started] = []
        with out.phase("symptom"):
            lab.kassa_ctl.add_fault("5xx", endpoints="create_payment")
            screen = alice.top_up(YOOKASSA)
            assert "YooKassa is not answering right now. Nothing was charged" in screen["text"]
            alert = wait_until(lambda: stack.alerts("[WARNING] payments yookassa: creating a "
                                                    "payment failed"), 30,
                               "alert [WARNING] payments yookassa: creating a payment failed")
            failed_id = int(alert[0].split("; payment ", 1)[1].split(" ", 1)[0])
            assert stack.logged("bot", "create_payment failed")
            assert stack.logged("bot", "yookassa retry")
            assert "status          failed" in _show(stack, failed_id)
        with out.phase("recovery"):
            lab.kassa_ctl.clear_faults()  # YooKassa is back
            answer = stack.sh_ok(YOOKASSA_CHECK)
            assert answer.strip() == "200", answer
            alice.press(screen["message_id"], "🔄 Try again")
            started = alice.started(alice.screen(screen["message_id"]))
            alice.pay(started)
            paid.append(started)
            _credited(alice, started)
            wait_until(lambda: alice.notices() == 1, 30, "the user told once")
            assert "OK: no differences" in stack.sh_ok("habitbot payments reconcile")
            assert len(lab.kassa_ctl.payments()) == 1, "one payment at YooKassa, no orphan"
        with out.phase("count"):
            _settle_count(out, alice, paid)


@drill("1.8", "double webhook", "1.8")
def double_webhook(lab: Lab, out: Outcome) -> None:
    """Each provider delivers its notification several times at once; the user also presses
    "Check payment" while they arrive."""
    with lab.stack("1.8") as stack:
        alice = Payer(stack, 7008, "Alice")
        alice.onboard()
        paid: list[Started] = []
        with out.phase("symptom"):
            card = alice.started(alice.top_up(YOOKASSA))
            alice.pay(card)
            _credited(alice, card)
            lab.kassa_ctl.resend(card.provider_id, copies=5, concurrent=True)
            alice.press(card.message_id, "🔄 Check payment")
            lab.kassa_ctl.wait_delivered(card.provider_id, count=6, timeout=30)
            coin = alice.started(alice.top_up(CRYPTOBOT))
            alice.pay(coin)
            _credited(alice, coin)
            lab.crypto_ctl.resend(int(coin.provider_id), copies=3, concurrent=True)
            lab.crypto_ctl.resend(int(coin.provider_id), new_update_id=True)
            lab.crypto_ctl.wait_delivered(coin.provider_id, count=5, timeout=30)
            paid += [card, coin]
            for started in paid:
                wait_until(lambda s=started: stack.logged(  # type: ignore[misc]
                    "web", f"Idempotent: payment {s.payment_id} already completed"), 30,
                    "web log: Idempotent: payment … already completed")
        with out.phase("recovery"):
            for started in paid:
                assert _show(stack, started.payment_id).count("balance topup") == 1
            assert "OK: no differences" in stack.sh_ok("habitbot payments reconcile")
            doubled = stack.sh_ok(
                "psql \"$DATABASE_URL\" -At -c \"SELECT payment_id, count(*) FROM "
                "balance_transactions WHERE payment_id IS NOT NULL AND kind = 'topup' "
                "GROUP BY payment_id HAVING count(*) > 1\"")
            assert doubled.strip() == "", doubled
            wait_until(lambda: alice.notices() == 2, 30, "the user told once per payment")
        with out.phase("count"):
            _settle_count(out, alice, paid)


@drill("2.3", "complete a payment by hand", "2.3")
def manual_completion(lab: Lab, out: Outcome) -> None:
    """The webhooks were never set up in the providers' settings: payments stay pending."""
    with lab.stack("2.3") as stack:
        lab.kassa_ctl.set_webhook(enabled=False)
        lab.crypto_ctl.set_webhook(enabled=False)
        alice = Payer(stack, 7023, "Alice")
        alice.onboard()
        paid: list[Started] = []
        with out.phase("symptom"):
            card = alice.started(alice.top_up(YOOKASSA))
            coin = alice.started(alice.top_up(CRYPTOBOT))
            for started in (card, coin):
                alice.pay(started)
                paid.append(started)
            for started in paid:
                assert "status          pending" in _show(stack, started.payment_id)
            assert not stack.logged("web", "Payment completed")
        with out.phase("recovery"):
            done = stack.sh_ok(f"habitbot payments complete --provider yookassa --id "
                               f"{card.provider_id}")
            assert f"yookassa confirms payment {card.payment_id}: credited" in done, done
            done = stack.sh_ok(f"habitbot payments complete --provider cryptobot --payment "
                               f"{coin.payment_id}")
            assert f"cryptobot confirms payment {coin.payment_id}: credited" in done, done
            again = stack.sh_ok(f"habitbot payments complete --provider yookassa --id "
                                f"{card.provider_id}")
            assert "already succeeded; nothing to do" in again, again
            wait_until(lambda: alice.notices() == 2, 30, "the user told once per payment")
            # Later the webhooks are set up and the providers deliver: nothing changes.
            lab.kassa_ctl.set_webhook(enabled=True)
            lab.crypto_ctl.set_webhook(enabled=True)
            lab.kassa_ctl.resend(card.provider_id)
            lab.crypto_ctl.resend(int(coin.provider_id))
            lab.kassa_ctl.wait_delivered(card.provider_id, timeout=30)
            lab.crypto_ctl.wait_delivered(coin.provider_id, timeout=30)
        with out.phase("count"):
            _settle_count(out, alice, paid)


@drill("2.2", "restore the database from a backup", "2.2")
def restore_from_backup(lab: Lab, out: Outcome) -> None:
    """A backup; then two payments are paid (one created before the backup, one after);
    then the database is wiped. Restore, migrate, restart, reconcile. After the restore our
    payment ids restart from the backup's sequence: Alice's next top-up gets the number the
    lost payment had, and YooKassa repeating the lost payment's notification must not credit
    that new, unpaid one."""
    with lab.stack("2.2", SCHEMA_CHECK_INTERVAL="5") as stack:
        alice = Payer(stack, 7022, "Alice")
        alice.onboard()
        paid: list[Started] = []
        with out.phase("symptom"):
            before = alice.started(alice.top_up(YOOKASSA))
            alice.pay(before)
            _credited(alice, before)
            open_at_backup = alice.started(alice.top_up(YOOKASSA))
            stack.sh_ok("pg_dump -Fc -f habitbot.dump \"$DATABASE_URL\"")
            alice.pay(open_at_backup)
            _credited(alice, open_at_backup)
            after = alice.started(alice.top_up(YOOKASSA))
            alice.pay(after)
            _credited(alice, after)
            paid += [before, open_at_backup, after]
            # The data is gone (a wrong host in a script, a disk lost): schema and all.
            stack.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            wait_until(lambda: stack.alerts("[CRITICAL] schema: DEGRADED mode"), 45,
                       "alert [CRITICAL] schema: DEGRADED mode")
            assert stack.sh("psql \"$DATABASE_URL\" -c 'SELECT count(*) FROM users'"
                            ).returncode != 0
        with out.phase("recovery"):
            stack.sh_ok(f"{CTL} stop habitbot:*", timeout=400)
            stack.sh_ok("pg_restore --clean --if-exists --no-owner -d \"$DATABASE_URL\" "
                        "habitbot.dump")
            stack.sh_ok("habitbot deploy-gate")
            stack.sh_ok(f"{CTL} start habitbot:*", timeout=60)
            wait_until(lambda: stack.sh("curl -sf http://127.0.0.1:8080/health").returncode
                       == 0, 90, "curl /health: 200")
            # Alice starts another top-up: it gets the lost payment's number again.
            again = alice.started(alice.top_up(YOOKASSA))
            assert again.payment_id == after.payment_id, (again, after)
            lab.kassa_ctl.resend(after.provider_id)
            lab.kassa_ctl.wait_delivered(after.provider_id, count=2, timeout=30)
            assert "status          pending" in _show(stack, again.payment_id), \
                "the new payment with the reused number stays unpaid"
            assert alice.credits(again) == 0
            wait_until(lambda: stack.alerts(f"yookassa payment {after.provider_id} was paid "
                                            "but missing in our database"), 30,
                       "alert [WARNING] payments yookassa: … re-created from the provider's "
                       "record")
            report = stack.sh("habitbot payments reconcile")
            assert report.returncode == 1, report.stdout
            assert "paid at the provider, not credited here" in report.stdout, report.stdout
            fixed = stack.sh_ok("habitbot payments reconcile --fix")
            assert fixed.count("[fixed: credited]") == 1, fixed
            assert "OK: no differences" in stack.sh_ok("habitbot payments reconcile")
            wait_until(lambda: alice.notices() == 5, 30,
                       "the user told once per payment (3 before the restore, 2 after)")
        with out.phase("count"):
            _settle_count(out, alice, paid)
