"""Premium notices: 3 days and 1 day before the trial or premium ends and on expiry, once per
(user, kind, period end), localized, in the user's timezone; expiry downgrades the tier and
nothing else; blocked users are skipped; a transient failure is retried by the next tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rq import Queue
from sqlalchemy import func, insert, select, update

from habitbot.models import Habit, JobExecutionLog, PremiumNotice, User
from habitbot.services import billing
from habitbot.services import habits as svc
from habitbot.services.habits import HabitDraft
from tests.support.jobs import run_burst
from workers import notices, queues
from workers.scheduler import PERIODIC_JOBS

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _user(engine, emu_client, telegram_id: int, language: str = "en",
          zone: str = "Europe/Berlin", **values) -> int:
    emu_client.add_user(telegram_id, first_name=f"u{telegram_id}", language_code=language)
    with engine.begin() as conn:
        return conn.execute(insert(User).values(
            telegram_id=telegram_id, language=language, timezone=zone,
            onboarded_at=NOW - timedelta(days=30), **values).returning(User.id)).scalar_one()


def _premium(ends: datetime) -> dict:
    return {"tier": "premium", "premium_ends_at": ends}


def _trial(ends: datetime) -> dict:
    return {"tier": "trial", "trial_started_at": ends - timedelta(days=7),
            "trial_ends_at": ends}


def _send_all(redis_conn) -> None:
    run_burst(redis_conn, queues.REMINDERS)


def _texts(emu_client, telegram_id: int) -> list[str]:
    return [m["text"] for m in emu_client.messages(telegram_id, sender="bot")]


def _notices(engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(select(PremiumNotice.user_id, PremiumNotice.kind,
                                   PremiumNotice.tier).order_by(PremiumNotice.id)).all()


@pytest.mark.parametrize(("ends_in", "kind"), [
    (timedelta(days=3, minutes=1), None),
    (timedelta(days=3), "3d"),
    (timedelta(days=1, seconds=1), "3d"),
    (timedelta(days=1), "1d"),
    (timedelta(seconds=1), "1d"),
    (timedelta(0), "expired"),
    (-timedelta(days=2) + timedelta(seconds=1), "expired"),
    (-timedelta(days=2), None),
])
def test_which_notice_is_due(ends_in, kind):
    assert notices.kind_for(NOW + ends_in, NOW) == kind


def test_each_user_gets_the_notice_due_in_their_language_and_timezone(
        runtime, engine, emu_client, redis_conn):
    trial = _user(engine, emu_client, 1, **_trial(NOW + timedelta(days=2, hours=12)))
    premium = _user(engine, emu_client, 2, "ru", "Asia/Tokyo",
                    **_premium(NOW + timedelta(hours=20)))
    ended = _user(engine, emu_client, 3, **_premium(NOW - timedelta(hours=1)))
    _user(engine, emu_client, 4, **_premium(NOW + timedelta(days=10)))          # not yet
    _user(engine, emu_client, 5, **_premium(NOW - timedelta(days=5)))           # long ago
    _user(engine, emu_client, 6, is_blocked=True, **_premium(NOW + timedelta(hours=5)))
    # A trial that ends soon does not matter while premium goes on after it.
    _user(engine, emu_client, 7, **_trial(NOW + timedelta(days=2)),
          premium_ends_at=NOW + timedelta(days=30))

    assert notices.run(runtime, NOW) == 3
    _send_all(redis_conn)
    assert _notices(engine) == [(trial, "3d", "trial"), (premium, "1d", "premium"),
                                (ended, "expired", "premium")]
    assert _texts(emu_client, 1) == [
        "⏳ Your premium trial ends on 13.03.2026 01:00. To keep up to 200 habits and several "
        "reminders per habit, get premium in /premium."]
    assert _texts(emu_client, 2) == [
        "⏳ Ваш премиум скоро закончится: 11.03.2026 17:00. Продлите его в /premium, чтобы "
        "сохранить до 200 привычек и несколько напоминаний для каждой."]
    assert _texts(emu_client, 3)[0].startswith("Your premium has ended. Your habits and "
                                               "history are all kept")
    for quiet in (4, 5, 6, 7):
        assert _texts(emu_client, quiet) == []


def test_a_notice_goes_out_once_however_often_it_is_queued(runtime, engine, emu_client,
                                                           redis_conn):
    user_id = _user(engine, emu_client, 11, **_premium(NOW + timedelta(days=2)))
    [due] = notices.due_notices(engine, NOW)
    assert notices.run(runtime, NOW) == 1
    # The same work queued again (a second scheduler, a retried job) sends nothing more.
    Queue(queues.REMINDERS, connection=redis_conn).enqueue(notices.send_notices,
                                                           [due.as_job_args()])
    _send_all(redis_conn)
    assert notices.send_notices([due.as_job_args()]) == 0
    assert notices.run(runtime, NOW + timedelta(minutes=10)) == 0
    assert len(_texts(emu_client, 11)) == 1
    assert _notices(engine) == [(user_id, "3d", "premium")]


def test_three_notices_over_a_period_then_a_renewal_gets_its_own(runtime, engine, emu_client,
                                                                 redis_conn):
    user_id = _user(engine, emu_client, 12, **_premium(NOW + timedelta(days=3)))
    for at in (NOW, NOW + timedelta(days=2, hours=1), NOW + timedelta(days=3, minutes=5)):
        notices.run(runtime, at)
        _send_all(redis_conn)
    assert [n[1] for n in _notices(engine)] == ["3d", "1d", "expired"]
    # Renewed: the new period's end brings its own notices.
    with engine.begin() as conn:
        conn.execute(update(User).where(User.id == user_id).values(
            tier="premium", premium_ends_at=NOW + timedelta(days=33)))
    assert notices.run(runtime, NOW + timedelta(days=31)) == 1
    _send_all(redis_conn)
    assert [n[1] for n in _notices(engine)] == ["3d", "1d", "expired", "3d"]
    assert len(_texts(emu_client, 12)) == 4


def test_expiry_downgrades_the_tier_and_keeps_every_habit(runtime, engine, emu_client,
                                                          redis_conn):
    user_id = _user(engine, emu_client, 13, **_premium(NOW + timedelta(days=40)))
    for n in range(5):
        svc.create_habit(engine, user_id, HabitDraft(f"Habit {n}"), now=NOW)
    with engine.begin() as conn:
        conn.execute(update(User).where(User.id == user_id).values(
            premium_ends_at=NOW - timedelta(minutes=1)))
    notices.run(runtime, NOW)
    _send_all(redis_conn)
    with engine.connect() as conn:
        assert conn.execute(select(User.tier).where(User.id == user_id)).scalar_one() == "free"
        assert conn.execute(select(func.count()).select_from(Habit).where(
            Habit.user_id == user_id, Habit.is_active)).scalar_one() == 5
    assert billing.status(engine, user_id, NOW).tier == "free"


def test_a_transient_failure_is_retried_by_the_next_tick(runtime, engine, emu_client,
                                                         redis_conn, monkeypatch):
    monkeypatch.setattr(runtime.sender, "_sleep", lambda seconds: None)
    user_id = _user(engine, emu_client, 14, **_trial(NOW + timedelta(hours=3)))
    emu_client.add_fault("5xx", methods=["sendMessage"], count=20)
    notices.run(runtime, NOW)
    _send_all(redis_conn)
    assert _notices(engine) == [] and _texts(emu_client, 14) == []
    emu_client.clear_faults()
    assert notices.run(runtime, NOW + timedelta(minutes=10)) == 1
    _send_all(redis_conn)
    assert _notices(engine) == [(user_id, "1d", "trial")] and len(_texts(emu_client, 14)) == 1


def test_a_user_who_blocked_the_bot_is_not_retried(runtime, engine, emu_client, redis_conn):
    user_id = _user(engine, emu_client, 15, **_premium(NOW + timedelta(hours=3)))
    emu_client.block(15)
    notices.run(runtime, NOW)
    _send_all(redis_conn)
    with engine.connect() as conn:
        assert conn.execute(select(User.is_blocked).where(User.id == user_id)).scalar_one()
    assert notices.run(runtime, NOW + timedelta(minutes=10)) == 0


def test_a_renewal_between_tick_and_send_sends_no_stale_notice(runtime, engine, emu_client,
                                                               redis_conn):
    user_id = _user(engine, emu_client, 16, **_premium(NOW + timedelta(hours=3)))
    notices.run(runtime, NOW)
    with engine.begin() as conn:
        conn.execute(update(User).where(User.id == user_id).values(
            premium_ends_at=NOW + timedelta(days=33)))
    _send_all(redis_conn)
    assert _notices(engine) == [] and _texts(emu_client, 16) == []


def test_the_scheduler_runs_notices_instead_of_a_separate_expiry_job(runtime, engine,
                                                                     emu_client, redis_conn):
    names = {job.name: job for job in PERIODIC_JOBS}
    assert "expire_tiers" not in names
    assert names["premium_notices"].func == "workers.notices.tick"
    _user(engine, emu_client, 17, **_premium(datetime.now(UTC) - timedelta(minutes=5)))
    assert notices.tick() == 1
    with engine.connect() as conn:
        assert conn.execute(select(JobExecutionLog.job_name, JobExecutionLog.status,
                                   JobExecutionLog.items)).one() == (
            "premium_notices", "success", 1)
        assert conn.execute(select(User.tier).where(User.telegram_id == 17)).scalar_one() \
            == "free"
