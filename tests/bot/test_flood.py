"""A few chats cannot starve everyone: a user's flood is throttled (one "slow down", the rest
dropped, confirmed and counted), a chat's queue is bounded, and a chat waiting for its own
1/s send slot holds no thread other chats need. Real bot code, PostgreSQL and Redis, the
Telegram emulator; the limiter runs at Telegram's real per-chat limit where it matters."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from habitbot import metrics
from habitbot.bot.app import PollingBot
from habitbot.bot.executor import ChatSerialExecutor
from habitbot.bot.registry import registry
from habitbot.config import ConfigError, load_settings
from habitbot.models import ProcessedUpdate, User
from habitbot.runtime import build_runtime
from habitbot.services import billing
from habitbot.services.users import set_timezone, touch_user
from tests.bot.conftest import Chat
from tests.bot.test_exactly_once import unconfirmed
from tests.bot.test_premium_stars import order_month, pre_checkout
from tests.conftest import make_env
from tests.support.polling import wait_until

ALICE = 6101  # floods, in Russian
BOB = 6102    # writes normally, in English
FLOODERS = (6201, 6202, 6203, 6204)
SLOW_DOWN_EN = "You are sending messages too fast"
SLOW_DOWN_RU = "Вы отправляете сообщения слишком часто"


@pytest.fixture
def make_bot(database_url, redis_url, emulator, redis_conn):
    """A bot with its own settings (throttle, queue bound, send limits)."""
    made: list[tuple[PollingBot, object]] = []

    def make(**env: str) -> PollingBot:
        settings = load_settings(make_env(database_url, redis_url, emulator.url, **env))
        rt = build_runtime("bot", "bot", settings=settings, configure_logging=False)
        bot = PollingBot(rt, poll_timeout=1)
        made.append((bot, rt))
        return bot

    yield make
    for bot, rt in made:
        bot.replies.stop()
        bot.executor.shutdown(timeout=30)
        rt.close()  # type: ignore[attr-defined]


def onboarded(emu_client, engine, user: int, language: str = "en") -> None:
    emu_client.add_user(user, first_name=f"U{user}", language_code=language)
    touch_user(engine, user, None, f"U{user}", language)
    set_timezone(engine, user, "UTC", complete_onboarding=True)


def bot_texts(emu_client, user: int) -> list[str]:
    return [m.get("text") or "" for m in emu_client.messages(user, sender="bot")]


def settle(bot: PollingBot) -> None:
    bot.poll_once()
    assert bot.executor.drain(timeout=60)


def test_a_flood_gets_one_slow_down_and_the_rest_is_dropped_confirmed_and_counted(
        make_bot, emu_client, engine, redis_conn):
    bot = make_bot(USER_UPDATE_BURST="5", USER_UPDATE_RATE="0.01")
    onboarded(emu_client, engine, ALICE, "ru")
    onboarded(emu_client, engine, BOB, "en")
    for _ in range(30):
        emu_client.inject_message(ALICE, "/help")
    emu_client.inject_message(BOB, "/help")
    settle(bot)
    alice = bot_texts(emu_client, ALICE)
    assert sum(t.startswith(SLOW_DOWN_RU) for t in alice) == 1
    assert len(alice) == 5 + 1  # five answered, one notice, nothing for the other 24
    assert len(bot_texts(emu_client, BOB)) == 1  # Bob is not throttled by Alice's flood
    stored = metrics.stored(redis_conn)
    assert stored['habitbot_updates_dropped_total{reason="throttled"}'] == 25
    bot.poll_once()
    assert unconfirmed(emu_client) == []  # dropped updates are confirmed, not redelivered
    with engine.connect() as conn:  # and a flood writes nothing per dropped update
        assert conn.execute(select(func.count()).select_from(
            ProcessedUpdate)).scalar_one() == 6

    for _ in range(5):  # still flooding: still dropped, no second notice
        emu_client.inject_message(ALICE, "/help")
    settle(bot)
    assert sum(t.startswith(SLOW_DOWN_RU) for t in bot_texts(emu_client, ALICE)) == 1
    assert metrics.stored(redis_conn)['habitbot_updates_dropped_total{reason="throttled"}'] \
        == 30


def test_a_flooding_payer_still_gets_the_checkout_answered_and_the_payment_credited(
        make_bot, emu_client, engine):
    bot = make_bot(USER_UPDATE_BURST="8", USER_UPDATE_RATE="0.01")
    onboarded(emu_client, engine, BOB, "en")
    chat = Chat(emu_client, bot, BOB)
    invoice, _ = order_month(chat, engine)  # 3 updates of the 8
    for _ in range(10):
        emu_client.inject_message(BOB, "/help")
    settle(bot)
    assert any(t.startswith(SLOW_DOWN_EN) for t in bot_texts(emu_client, BOB))
    answer = pre_checkout(chat, invoice)
    assert answer["ok"]  # pre-checkout queries are never throttled
    emu_client.pay(BOB, invoice_message_id=invoice["message_id"],
                   pre_checkout_query_id=answer["pre_checkout_query_id"])
    settle(bot)
    with engine.connect() as conn:
        user_id = conn.execute(select(User.id).where(User.telegram_id == BOB)).scalar_one()
    assert billing.status(engine, user_id).tier == "premium"


def test_a_chats_queue_is_bounded_and_the_rest_of_its_updates_dropped_and_counted(
        make_bot, emu_client, engine, redis_conn, monkeypatch):
    bot = make_bot(CHAT_QUEUE_LIMIT="3", USER_UPDATE_BURST="100")
    onboarded(emu_client, engine, ALICE)
    onboarded(emu_client, engine, BOB)
    release = threading.Event()
    help_handler = registry.commands["help"]

    def slow_help(ctx, message):
        if ctx.user.telegram_id == ALICE:
            assert release.wait(60)
        help_handler(ctx, message)

    monkeypatch.setitem(registry.commands, "help", slow_help)
    for _ in range(1 + 3 + 4):  # one in hand, three queued, four past the bound
        emu_client.inject_message(ALICE, "/help")
    emu_client.inject_message(BOB, "/help")
    bot.poll_once()
    wait_until(lambda: bot_texts(emu_client, BOB), 30, "Bob answered while Alice's queue "
               "is full")
    assert bot.executor.queued(ALICE) == 3
    assert metrics.stored(redis_conn)['habitbot_updates_dropped_total{reason="queue_full"}'] \
        == 4
    release.set()
    assert bot.executor.drain(timeout=60)
    assert len(bot_texts(emu_client, ALICE)) == 4


def test_the_executor_refuses_past_the_bound_but_forced_tasks_always_queue():
    executor = ChatSerialExecutor(workers=1, max_queued=1)
    release = threading.Event()
    ran: list[str] = []
    try:
        assert executor.submit("a", lambda: release.wait(30))
        assert executor.submit("a", lambda: ran.append("a1"))
        assert not executor.submit("a", lambda: ran.append("a2"))
        assert executor.submit("a", lambda: ran.append("payment"), force=True)
        assert executor.submit("b", lambda: ran.append("b1"))  # another chat: its own bound
        release.set()
        assert executor.drain(timeout=30)
    finally:
        release.set()
        executor.shutdown()
    assert ran.index("a1") < ran.index("payment") and "a2" not in ran


def test_a_normal_chat_is_answered_while_four_flooding_chats_wait_for_their_send_slots(
        make_bot, emu_client, engine):
    """Telegram's real 1/s per chat: each flooder gets its burst of 2 replies, the rest are
    parked per chat (no thread waits for a slot), and Bob's reply goes out at once — before
    any flooder's third."""
    bot = make_bot(TELEGRAM_CHAT_RATE="1", USER_UPDATE_BURST="100")
    for user in (*FLOODERS, BOB):
        onboarded(emu_client, engine, user)
    for _ in range(6):
        for user in FLOODERS:
            emu_client.inject_message(user, "/help")
    emu_client.inject_message(BOB, "/help")
    settle(bot)  # every update handled: no thread waited for a slot
    assert len(bot_texts(emu_client, BOB)) == 1
    assert [len(bot_texts(emu_client, user)) for user in FLOODERS] == [2, 2, 2, 2]
    assert bot.replies.waiting() == 4 * 4

    bot.replies.start()  # the parked replies go out as the slots come, in order
    wait_until(lambda: bot.replies.waiting() == 0, 60, "parked replies delivered")
    for user in FLOODERS:
        assert len(bot_texts(emu_client, user)) == 6


def test_pre_checkout_is_answered_while_every_update_thread_is_busy(
        make_bot, emu_client, engine, monkeypatch):
    bot = make_bot()
    onboarded(emu_client, engine, BOB)
    chat = Chat(emu_client, bot, BOB)
    invoice, _ = order_month(chat, engine)
    release = threading.Event()
    help_handler = registry.commands["help"]

    def stuck_help(ctx, message):
        assert release.wait(60)
        help_handler(ctx, message)

    monkeypatch.setitem(registry.commands, "help", stuck_help)
    try:
        for user in FLOODERS:
            onboarded(emu_client, engine, user)
            emu_client.inject_message(user, "/help")
        query = emu_client.pre_checkout(BOB, invoice_message_id=invoice["message_id"])
        bot.poll_once()
        answer = emu_client.wait_for_pre_checkout_answer(BOB, query["pre_checkout_query_id"])
        assert answer["ok"]
        assert bot.executor.in_hand >= 4  # the four stuck updates were still in hand
    finally:
        release.set()


@pytest.mark.parametrize(("name", "value"), [
    ("USER_UPDATE_RATE", "0"), ("USER_UPDATE_RATE", "fast"), ("USER_UPDATE_BURST", "0"),
    ("USER_UPDATE_BURST", "100000"), ("CHAT_QUEUE_LIMIT", "-1"), ("CHAT_QUEUE_LIMIT", "x")])
def test_bad_throttle_settings_fail_loudly_naming_the_variable(name, value):
    env = make_env("postgresql://u@h/db", "redis://h/0", "http://h", **{name: value})
    with pytest.raises(ConfigError, match=f"^{name} is invalid"):
        load_settings(env)


def test_throttle_settings_default_to_sensible_values():
    env = make_env("postgresql://u@h/db", "redis://h/0", "http://h")
    env.pop("USER_UPDATE_BURST")
    settings = load_settings(env)
    assert (settings.user_update_rate, settings.user_update_burst,
            settings.chat_queue_limit) == (1.0, 20, 20)


def test_a_busy_chat_takes_turns_with_other_chats_for_the_threads():
    executor = ChatSerialExecutor(workers=1)
    release = threading.Event()
    ran: list[str] = []
    try:
        executor.submit("busy", lambda: (release.wait(30), ran.append("busy1")))
        executor.submit("busy", lambda: ran.append("busy2"))
        executor.submit("busy", lambda: ran.append("busy3"))
        executor.submit("other", lambda: ran.append("other1"))
        release.set()
        assert executor.drain(timeout=30)
    finally:
        release.set()
        executor.shutdown()
    assert ran == ["busy1", "other1", "busy2", "busy3"]
