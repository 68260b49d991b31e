"""Payments a database restore lost: the provider's record (YooKassa metadata, Crypto Pay
payload) says whose payment it is and what for, so a paid one is re-created and credited
once; and a later payment that reuses the lost one's numeric id (the id sequence restarts
from the backup) is never credited with someone else's money.

Against the provider emulators, the webhooks app on a real port, PostgreSQL and Redis."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, insert, select

from habitbot.models import BalanceTransaction, Payment, Subscription, User
from habitbot.payments import origin, service
from habitbot.services import billing
from tests.payments.support import (
    ALICE_TG,
    add_user,
    alerts,
    credits,
    payment_row,
    run_jobs,
)

BOB_TG = 7002


def _lose(engine, payment_id: int, user_too: bool = False) -> None:
    """What a restore from a backup older than the payment does to it."""
    with engine.begin() as conn:
        user_id = conn.execute(select(Payment.user_id).where(Payment.id == payment_id)
                               ).scalar_one()
        conn.execute(delete(Payment).where(Payment.id == payment_id))
        if user_too:
            conn.execute(delete(User).where(User.id == user_id))


def _bob_takes_the_id(engine, emu_client, payment_id: int) -> int:
    """Bob's new, still open payment gets the lost one's number (the restored sequence hands
    it out again); returns Bob's user id."""
    bob = add_user(engine, emu_client, BOB_TG)
    with engine.begin() as conn:
        conn.execute(insert(Payment).values(
            id=payment_id, user_id=bob, provider="yookassa", payment_type="balance_topup",
            amount_minor=10000, currency="RUB", idempotence_key=uuid.uuid4()))
    return bob


def _rows(engine) -> list[Payment]:
    with engine.connect() as conn:
        return list(conn.execute(select(Payment).order_by(Payment.id)).all())


def _started(runtime, user_id: int, provider: str = "yookassa", **kwargs):
    kwargs = kwargs or {"payment_type": "balance_topup", "amount_minor": 10000}
    payment_type = kwargs.pop("payment_type")
    started = service.start_payment(runtime, user_id, provider, payment_type, **kwargs)
    return started.payment_id, payment_row(runtime.engine, started.payment_id)


# ---------------------------------------------------------------- the record

@pytest.mark.parametrize("fields, restorable", [
    ({"payment_id": "5", "key": str(uuid.uuid4()), "telegram_id": "7", "type": "balance_topup"},
     True),
    ({"payment_id": "5", "key": str(uuid.uuid4()), "telegram_id": "7", "type": "subscription",
      "plan": "year"}, True),
    ({"payment_id": "5", "key": str(uuid.uuid4()), "telegram_id": "7", "type": "subscription"},
     False),  # which plan?
    ({"payment_id": "5", "key": str(uuid.uuid4()), "telegram_id": "7", "type": "balance_topup",
      "plan": "month"}, False),  # contradicts itself
    ({"payment_id": "5", "key": "not-a-uuid", "telegram_id": "7", "type": "balance_topup"},
     False),
    ({"payment_id": "5", "key": str(uuid.uuid4()), "telegram_id": "-7",
      "type": "balance_topup"}, False),
    ({"payment_id": "5", "key": str(uuid.uuid4()), "telegram_id": "7", "type": "gift"}, False),
    ({"payment_id": "5"}, False),  # an older record: our id only
    ({}, False),
])
def test_only_a_complete_record_can_rebuild_a_row(fields, restorable):
    assert origin.from_fields(fields).restorable is restorable
    assert origin.from_payload(origin.from_fields(fields).payload()) == \
        origin.from_fields(fields)


@pytest.mark.parametrize("payload, payment_id", [("42", 42), ("", None), (None, None),
                                                 ("{broken", None), ("[1, 2]", None),
                                                 ('{"payment_id": "9"}', 9), ("1" * 30, None)])
def test_payloads_old_and_new_are_read_safely(payload, payment_id):
    assert origin.from_payload(payload).payment_id == payment_id


# ---------------------------------------------------------------- webhooks

def test_a_webhook_for_a_payment_the_restore_lost_recreates_and_credits_it(
        web, alice, kassa_control, emu_client):
    payment_id, row = _started(web.runtime, alice)
    _lose(web.runtime.engine, payment_id)
    kassa_control.pay(row.provider_payment_id)
    [delivery] = kassa_control.wait_delivered(row.provider_payment_id)
    assert delivery["statuses"] == [200]
    [restored] = _rows(web.runtime.engine)
    assert (restored.user_id, restored.status, restored.amount_minor,
            restored.idempotence_key, restored.provider_payment_id) == (
        alice, "succeeded", 10000, row.idempotence_key, row.provider_payment_id)
    assert billing.balance(web.runtime.engine, alice) == 10000
    assert alerts(web.runtime.engine, f"re-created from the provider's record as payment "
                                      f"{restored.id} (it was {payment_id})")
    run_jobs(web.runtime)
    assert len(emu_client.messages(ALICE_TG, sender="bot")) == 1
    # YooKassa's retries change nothing.
    kassa_control.resend(row.provider_payment_id, copies=5, concurrent=True)
    kassa_control.wait_delivered(row.provider_payment_id, count=6, timeout=30)
    assert credits(web.runtime.engine) == 1 and len(_rows(web.runtime.engine)) == 1


def test_a_reused_id_never_gets_the_lost_payments_money(web, alice, engine, emu_client,
                                                        kassa_control):
    """Alice's payment N is lost; Bob's new payment gets id N again and is still open
    (created, not yet at YooKassa). Alice's notification names N: Bob gets nothing, Alice's
    payment is re-created under a new id and credited."""
    payment_id, row = _started(web.runtime, alice)
    _lose(engine, payment_id)
    bob = _bob_takes_the_id(engine, emu_client, payment_id)
    kassa_control.pay(row.provider_payment_id)
    kassa_control.wait_delivered(row.provider_payment_id)
    bobs = payment_row(engine, payment_id)
    assert (bobs.status, bobs.provider_payment_id) == ("pending", None)
    assert billing.balance(engine, bob) == 0
    assert billing.balance(engine, alice) == 10000
    [alices] = [r for r in _rows(engine) if r.user_id == alice]
    assert alices.id != payment_id and alices.status == "succeeded"


def test_a_lost_subscription_of_a_lost_user_comes_back_with_both(web, alice, engine,
                                                                 kassa_control):
    payment_id, row = _started(web.runtime, alice, payment_type="subscription", plan="year")
    _lose(engine, payment_id, user_too=True)
    kassa_control.pay(row.provider_payment_id)
    kassa_control.wait_delivered(row.provider_payment_id)
    with engine.connect() as conn:
        user = conn.execute(select(User).where(User.telegram_id == ALICE_TG)).one()
        [sub] = conn.execute(select(Subscription).where(Subscription.user_id == user.id)).all()
    assert user.tier == "premium" and sub.plan == "year"
    assert alerts(engine, "whose user row was re-created too")


def test_a_lost_crypto_pay_invoice_is_recreated_from_its_signed_update(web, alice, engine,
                                                                      cryptopay_control):
    payment_id, row = _started(web.runtime, alice, "cryptobot",
                               payment_type="balance_topup", amount_minor=4000)
    _lose(engine, payment_id)
    cryptopay_control.pay(int(row.provider_payment_id))
    cryptopay_control.wait_delivered(row.provider_payment_id)
    [restored] = _rows(engine)
    assert (restored.status, restored.idempotence_key) == ("succeeded", row.idempotence_key)
    assert billing.balance(engine, alice) == 4000
    cryptopay_control.resend(int(row.provider_payment_id), new_update_id=True)
    cryptopay_control.wait_delivered(row.provider_payment_id, count=2)
    assert credits(engine) == 1


def test_an_unpaid_lost_payment_is_not_recreated(web, alice, engine, kassa_control):
    payment_id, row = _started(web.runtime, alice)
    _lose(engine, payment_id)
    kassa_control.cancel(row.provider_payment_id)
    kassa_control.wait_delivered(row.provider_payment_id)
    assert _rows(engine) == []
    assert alerts(engine, "is not one of ours")


def test_a_record_naming_another_rows_key_is_refused(web, alice, engine, kassa_control):
    """Our row found by the key in the record must also agree on the provider id: one
    provider payment never credits another payment of ours."""
    first_id, first = _started(web.runtime, alice)
    second_id, second = _started(web.runtime, alice)
    metadata = {"payment_id": str(second_id), "key": str(second.idempotence_key),
                "telegram_id": str(ALICE_TG), "type": "balance_topup"}
    stray = service.yookassa_client(web.runtime.settings).create_payment(
        amount_minor=10000, currency="RUB", idempotence_key=str(uuid.uuid4()),
        return_url="https://t.me/x", description="x", metadata=metadata)
    kassa_control.pay(stray.id)
    kassa_control.wait_delivered(stray.id)
    assert payment_row(engine, second_id).status == "pending"
    assert credits(engine) == 0
    assert alerts(engine, f"our payment {second_id} is yookassa payment "
                          f"{second.provider_payment_id}")
    with engine.connect() as conn:
        assert conn.execute(select(BalanceTransaction)).all() == []


def test_concurrent_notifications_of_a_lost_payment_recreate_it_once(web, alice, engine,
                                                                    kassa_control):
    payment_id, row = _started(web.runtime, alice)
    _lose(engine, payment_id)
    kassa_control.set_webhook(enabled=False)
    kassa_control.pay(row.provider_payment_id)
    kassa_control.set_webhook(enabled=True)
    kassa_control.resend(row.provider_payment_id, copies=20, concurrent=True)
    delivered = kassa_control.wait_delivered(row.provider_payment_id, count=20, timeout=60)
    assert all(d["statuses"][-1] == 200 for d in delivered)
    assert len(_rows(engine)) == 1 and credits(engine) == 1
    assert billing.balance(engine, alice) == 10000
    assert len(alerts(engine, "re-created from the provider's record")) == 1


def test_a_refund_of_a_lost_payment_never_touches_the_row_that_reused_its_id(
        web, alice, engine, emu_client, kassa_control):
    payment_id, row = _started(web.runtime, alice)
    kassa_control.set_webhook(enabled=False)
    kassa_control.pay(row.provider_payment_id)
    _lose(engine, payment_id)
    bob = _bob_takes_the_id(engine, emu_client, payment_id)
    kassa_control.set_webhook(enabled=True)
    kassa_control.refund(row.provider_payment_id)
    kassa_control.wait_delivered(row.provider_payment_id, event="refund.succeeded")
    bobs = payment_row(engine, payment_id)
    assert (bobs.status, bobs.refunded_minor, bobs.provider_payment_id) == ("pending", 0, None)
    assert billing.balance(engine, bob) == 0
    assert alerts(engine, "of a payment we do not have")
