"""Drills of the platform incidents: schema drift (1.0), database down (1.1), Telegram down or
the token revoked (1.2), a hanging dependency behind /health (1.6), alerts not arriving
(1.10)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from alembic import command

from drills.actors import Person, Reminded
from drills.core import Outcome, drill
from drills.harness import ALERT_CHAT, DrillStack, Lab
from habitbot.services.schema import alembic_config_for, revision_below_head
from tests.e2e.stack import children, wait_until

LIMITED = "Some features are temporarily unavailable"


@drill("1.0", "schema drift (DEGRADED mode)", "1.0")
def schema_drift(lab: Lab, out: Outcome) -> None:
    with lab.stack("1.0", SCHEMA_CHECK_INTERVAL="5") as stack:
        eve = Person(stack, 5005)
        eve.onboard()
        due = Reminded.plan(stack, 610_000, users=3, lead=25)
        pids = stack.pids()
        with out.phase("symptom"):
            # A release went out without its migration: the database is one revision behind.
            command.downgrade(alembic_config_for(stack.env["DATABASE_URL"]), "-1")
            _, body = stack.wait_health(
                lambda code, b: not b.get("checks", {}).get("schema", {}).get("ok", True),
                45, "/health: schema failing")
            assert body["status"] == "degraded", body
            assert f"revision {revision_below_head()}" in body["checks"]["schema"]["error"]
            wait_until(lambda: stack.logged("bot", "DEGRADED mode: schema does not match"),
                       30, "bot log: DEGRADED mode")
            wait_until(lambda: stack.logged("scheduler", "circuit breaker open"), 30,
                       "scheduler log: circuit breaker open")
            wait_until(lambda: stack.alerts("[CRITICAL] schema: DEGRADED mode"), 30,
                       "alert [CRITICAL] schema: DEGRADED mode")
            assert LIMITED in eve.ask("/help"), "the bot tells users features are limited"
            check = stack.sh("habitbot check-schema")
            assert check.returncode == 1 and "Schema does not match the code" in check.stdout, \
                check.stdout
            # The reminders' minute passes while the scheduler's circuit breaker is open.
            wait_until(lambda: due.seconds_to_fire() == 0, 90, "the reminders' minute")
            assert due.missing() == len(due.chats), "no reminder goes out in DEGRADED mode"
            assert stack.pids() == pids, "no program restarted (no crash loop)"
        with out.phase("recovery"):
            stack.sh_ok("habitbot deploy-gate")
            stack.wait_health(lambda code, b: b.get("status") == "ok", 60, "/health ok")
            wait_until(lambda: stack.logged("bot", "left DEGRADED mode"), 30,
                       "bot log: left DEGRADED mode")
            wait_until(lambda: stack.alerts("[INFO] schema: left DEGRADED mode"), 30,
                       "alert [INFO] schema: left DEGRADED mode")
            stack.sh_ok("habitbot check-schema")
            assert LIMITED not in eve.ask("/help")
            due.wait_delivered(150)
            assert len(stack.alerts("[CRITICAL] schema: DEGRADED mode")) == 1, "alerted once"
        with out.phase("count"):
            out.lost = eve.unanswered() + due.missing()
            if due.duplicated():
                out.note(f"count: {due.duplicated()} reminder(s) sent twice")
                out.recovered = False


@drill("1.1", "database unavailable", "1.1")
def database_down(lab: Lab, out: Outcome) -> None:
    with lab.stack("1.1") as stack:
        eve = Person(stack, 5011)
        eve.onboard()
        due = Reminded.plan(stack, 611_000, users=3, lead=20)
        try:
            with out.phase("symptom"):
                lab.pg.stop()  # PostgreSQL went down (crash, disk full, host restart)
                code, body = stack.health()
                assert code == 503 and not body["checks"]["database"]["ok"], body
                assert stack.sh("psql \"$DATABASE_URL\" -c 'SELECT 1'").returncode != 0
                assert LIMITED in eve.ask("/help"), "the bot answers with a minimal user"
                wait_until(lambda: stack.alerts("[CRITICAL] health_check database:"), 90,
                           "alert [CRITICAL] health_check database")
                wait_until(lambda: due.seconds_to_fire() == 0, 90, "the reminders' minute")
                wait_until(lambda: stack.alerts("[WARNING] job habit_reminders: failed:"), 75,
                           "alert [WARNING] job habit_reminders: failed")
        finally:
            lab.pg.start()  # systemctl start postgresql
        with out.phase("recovery"):
            stack.sh_ok("psql \"$DATABASE_URL\" -c 'SELECT 1'")
            wait_until(lambda: stack.sh("curl -sf http://127.0.0.1:8080/health").returncode == 0,
                       30, "curl /health: 200")
            wait_until(lambda: stack.alerts("[INFO] health_check database: recovered"), 90,
                       "alert [INFO] health_check database: recovered")
            assert LIMITED not in eve.ask("/help")
            due.wait_delivered(150)
            wait_until(lambda: stack.alert_rows("[CRITICAL] health_check database:"), 90,
                       "the alert raised while the database was down recorded in admin_alerts")
        with out.phase("count"):
            out.lost = eve.unanswered() + due.missing()
            if due.duplicated():
                out.note(f"count: {due.duplicated()} reminder(s) sent twice")
                out.recovered = False


HEALTH_TIMING = ("curl -s -o /dev/null -w '%{http_code} %{time_total}\\n' "
                 "http://127.0.0.1:8080/health")


def _cluster_pids(lab: Lab) -> list[int]:
    """The postmaster of the lab's cluster and its children."""
    postmaster = int((lab.pg.data / "postmaster.pid").read_text().split()[0])
    return [postmaster, *children(postmaster)]


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


@drill("1.6", "health check hanging", "1.6")
def health_hanging(lab: Lab, out: Outcome) -> None:
    with lab.stack("1.6") as stack:
        eve = Person(stack, 5016)
        eve.onboard()
        pids = stack.pids()
        frozen = _cluster_pids(lab)
        try:
            with out.phase("symptom"):
                # PostgreSQL stops answering without closing connections (a stalled disk, a
                # frozen VM): every query waits, nothing fails.
                _signal_all(frozen, signal.SIGSTOP)
                eve.say("/today")  # waits in the bot for the database
                for _ in range(3):  # the first call and the calls while a check still hangs
                    code, seconds = stack.sh_ok(HEALTH_TIMING).split()
                    assert code == "503" and float(seconds) < 3.5, (code, seconds)
                _, body = stack.health()
                error = body["checks"]["database"].get("error", "")
                assert "timed out after" in error or "still hanging" in error, body
                wait_until(lambda: stack.alerts("[CRITICAL] health_check database:"), 90,
                           "alert [CRITICAL] health_check database")
                hung = stack.sh("timeout 5 psql \"$DATABASE_URL\" -c 'SELECT 1'")
                assert hung.returncode == 124, "psql hangs too"
                assert stack.pids() == pids, "no program restarted"
        finally:
            # systemctl restart postgresql: TERM, then KILL what does not stop, then start.
            _signal_all(frozen, signal.SIGKILL)
            wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in frozen), 30,
                       "the frozen PostgreSQL gone")
            lab.pg.start()
        with out.phase("recovery"):
            stack.sh_ok("psql \"$DATABASE_URL\" -c 'SELECT 1'")
            stack.wait_health(lambda code, b: code == 200 and b.get("status") == "ok", 90,
                              "/health ok")
            wait_until(lambda: stack.alerts("[INFO] health_check database: recovered"), 90,
                       "alert [INFO] health_check database: recovered")
            eve.wait_answered(60)
            assert stack.pids() == pids, "no program restarted"
        with out.phase("count"):
            out.lost = eve.unanswered()


GET_ME = "curl -s \"${TELEGRAM_API_URL:-https://api.telegram.org}/bot$BOT_TOKEN/getMe\""
WAITING_REPLIES = "redis-cli -u \"$REDIS_URL\" ZCARD habitbot:replies:chats"


@drill("1.2", "Telegram down / token revoked (401)", "1.2")
def telegram_down(lab: Lab, out: Outcome) -> None:
    """A Telegram outage heals by itself; a revoked token needs the operator. The emulator
    cannot issue a second token for the same bot, so the new token of the recovery is the same
    string accepted again. The message the bot had received when Telegram went down is answered
    once Telegram is back (its reply is kept, not given up, and the handler does not run
    again); `lost` counts the messages never answered."""
    with lab.stack("1.2") as stack:
        eve = Person(stack, 5012)
        eve.onboard()
        with out.phase("symptom"):
            # Telegram goes down while the bot answers a message it has just received ...
            lab.tg.add_fault("outage", methods=["sendMessage"], seconds=30)
            in_flight = eve.say("/help", expect="Commands:")
            wait_until(lambda: stack.logged("bot", "reply deferred"), 60,
                       "bot log: reply deferred until Telegram answers again")
            assert stack.logged("bot", "telegram call failed after retries")
            assert not stack.logged("bot", "could not send the apology")
            assert stack.sh_ok(WAITING_REPLIES).strip() == "1", "one chat with a reply kept"
            wait_until(lambda: not lab.tg.faults(), 40, "Telegram back")
            # ... the reply goes out once Telegram answers again, once ...
            wait_until(lambda: stack.logged("bot", "deferred replies delivered"), 60,
                       "bot log: deferred replies delivered")
            eve.wait_latest_answered(30)
            assert stack.sh_ok(WAITING_REPLIES).strip() == "0"
            helps = [m for m in eve.messages() if m["from"] == "bot"
                     and m["message_id"] > in_flight and "Commands:" in (m.get("text") or "")]
            assert len(helps) == 1, f"the kept reply sent {len(helps)} times"
            # ... and while the bot polls: the message waits at Telegram.
            lab.tg.add_fault("outage", methods=["getUpdates"], seconds=20)
            eve.say("/today", expect="Nothing due today")
            wait_until(lambda: stack.logged("bot", "polling failed, retrying"), 30,
                       "bot log: polling failed, retrying")
            eve.wait_latest_answered(90)  # polling resumed by itself after the outage

            lab.tg.add_fault("401")  # the token was revoked in @BotFather
            wait_until(lambda: stack.logged("bot", "Telegram rejected the bot token (401)"),
                       60, "bot log: Telegram rejected the bot token (401)")
            assert '"error_code":401' in stack.sh_ok(GET_ME).replace(" ", "")
            rows = wait_until(lambda: stack.alert_rows("[CRITICAL] bot: Telegram rejected "
                                                       "BOT_TOKEN (401 Unauthorized)"),
                              30, "admin_alerts: the 401 alert")
            assert rows[0].status == "failed", "with a revoked token no alert can be sent"
            assert stack.logged("bot", "Failed to send alert")
            eve.say("/today", expect="Nothing due today")
            eve.say("/habits", expect="You have no habits yet")
            stack.wait_health(lambda code, b: code == 503 and not b["checks"]["bot"]["ok"], 150,
                              "/health 503: bot heartbeat too old")
            wait_until(lambda: stack.alert_rows("[CRITICAL] health_check bot: last heartbeat"),
                       90, "admin_alerts: [CRITICAL] health_check bot")
        with out.phase("recovery"):
            lab.tg.clear_faults()  # the new token from @BotFather ...
            stack.systemctl_restart(BOT_TOKEN=stack.env["BOT_TOKEN"])  # ... in the env file
            assert '"ok":true' in stack.sh_ok(GET_ME).replace(" ", "")
            wait_until(lambda: stack.sh("curl -sf http://127.0.0.1:8080/health").returncode == 0,
                       60, "curl /health: 200")
            eve.wait_latest_answered(60)  # Telegram kept the messages written meanwhile
            eve.ask("/start", expect="Eve")
        with out.phase("count"):
            out.lost = eve.unanswered()
            if out.lost:
                out.note(f"count: {out.lost} message(s) never answered")


ALERT_TEST = "habitbot alert test --message \"test $(date +%T.%N)\""


def _alert_test(stack: DrillStack, expected: str) -> None:
    """`habitbot alert test` with a fresh message (a repeated one is inside the cooldown and
    reported as suppressed); checks what it printed and, when sent, the alert chat."""
    before = len(stack.alerts("[INFO] alert_test: test "))
    result = stack.sh(ALERT_TEST)
    assert expected in result.stdout, result.stdout + result.stderr
    assert result.returncode == (1 if expected == "alert failed" else 0), result.returncode
    if expected == "alert sent":
        wait_until(lambda: len(stack.alerts("[INFO] alert_test: test ")) > before, 30,
                   "the test alert in the alert chat")


@drill("1.10", "alerts do not arrive", "1.10")
def alerts_not_arriving(lab: Lab, out: Outcome) -> None:
    """Two causes: ALERT_CHAT_ID not set, then the bot blocked in the alert chat."""
    with lab.stack("1.10", ALERT_CHAT_ID=None, SCHEMA_CHECK_INTERVAL="5") as stack:
        with out.phase("symptom"):
            command.downgrade(alembic_config_for(stack.env["DATABASE_URL"]), "-1")
            rows = wait_until(lambda: stack.alert_rows("[CRITICAL] schema: DEGRADED mode"),
                              45, "admin_alerts: the DEGRADED mode alert")
            assert {row.status for row in rows} <= {"logged", "suppressed"}, rows
            assert stack.alerts() == [], "nothing reached Telegram"
            test = stack.sh_ok("habitbot alert test")
            assert "alert logged" in test and "ALERT_CHAT_ID is not set" in test, test
            stack.sh_ok("habitbot deploy-gate")  # the incident itself is over
        with out.phase("recovery"):
            stack.systemctl_restart(ALERT_CHAT_ID=str(ALERT_CHAT))
            _alert_test(stack, "alert sent")
        with out.phase("symptom"):
            # Someone in the alert chat blocked the bot.
            lab.tg.add_user(ALERT_CHAT, first_name="Ops", language_code="en")
            lab.tg.block(ALERT_CHAT)
            _alert_test(stack, "alert failed")
        with out.phase("recovery"):
            lab.tg.unblock(ALERT_CHAT)
            Person(stack, ALERT_CHAT, first_name="Ops").ask("/start")  # the chat writes again
            _alert_test(stack, "alert sent")
        with out.phase("count"):
            rows = stack.alert_rows()
            out.lost = sum(1 for row in rows if row.status not in
                           ("sent", "logged", "failed", "suppressed"))
