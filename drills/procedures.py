"""Drills of the procedures that need no payment: a full restart (2.1) and a user stuck in a
dialog (2.4)."""

from __future__ import annotations

from rq import Queue

from drills.actors import Person, Reminded
from drills.core import Outcome, drill
from drills.harness import Lab
from tests.e2e.stack import wait_until

CTL = "supervisorctl -c supervisord.conf"
APOLOGY = "Sorry, something went wrong"


@drill("2.1", "full restart", "2.1")
def full_restart(lab: Lab, out: Outcome) -> None:
    """`supervisorctl restart habitbot:*` with a dialog in progress, a job in hand and
    reminders due while the programs are down."""
    with lab.stack("2.1") as stack:
        eve = Person(stack, 5021)
        eve.onboard()
        due = Reminded.plan(stack, 621_000, users=3, lead=35)
        before = stack.pids()
        conn = stack.redis()
        with out.phase("symptom"):
            assert "What habit" in eve.ask("/new")
            wait_until(lambda: due.seconds_to_fire() < 12, due.seconds_to_fire() + 5,
                       "the reminders nearly due")
            in_hand = Queue("default", connection=conn).enqueue("time.sleep", 8,
                                                                job_timeout=60)
            wait_until(lambda: in_hand.get_status(refresh=True) == "started", 30,
                       "a job in hand")
        with out.phase("recovery"):
            stack.sh_ok(f"{CTL} restart habitbot:*", timeout=400)
            assert in_hand.get_status(refresh=True) == "finished", "the job in hand finished"
            wait_until(lambda: stack.sh_ok(f"{CTL} status").count("RUNNING") == 5, 30,
                       "`supervisorctl status`: five programs RUNNING")
            assert not set(before.values()) & set(stack.pids().values()), "all restarted"
            wait_until(lambda: stack.sh("curl -sf http://127.0.0.1:8080/health").returncode
                       == 0, 90, "curl /health: 200")
            wait_until(lambda: stack.log("bot").count("Startup complete") >= 2, 30,
                       "bot log: Startup complete")
            wait_until(lambda: stack.log("scheduler").count("Scheduler started") >= 2, 30,
                       "scheduler log: Scheduler started")
            assert "how do you track it" in eve.ask("Read"), "the dialog went on"
            due.wait_delivered(150)
            assert not stack.alert_rows("[WARNING] health_check workers"), \
                "a planned restart raises no workers alert"
        conn.close()
        with out.phase("count"):
            out.lost = eve.unanswered() + due.missing()
            if due.duplicated():
                out.note(f"count: {due.duplicated()} reminder(s) sent twice")
                out.recovered = False


@drill("2.4", "a user stuck in a dialog", "2.4")
def stuck_dialog(lab: Lab, out: Outcome) -> None:
    """A dialog saved by the previous release in a shape this one does not read: every text
    the user sends fails and is apologised for, until the dialog is reset."""
    with lab.stack("2.4") as stack:
        eve = Person(stack, 5024)
        user_id = eve.onboard()
        assert "New habit" in eve.ask("/new Read daily 08:30")
        conn = stack.redis()
        conn.hset("habitbot:fsm:5024", mapping={"state": "new:target", "data": "{}"})
        conn.close()
        with out.phase("symptom"):
            assert APOLOGY in eve.ask("20 pages")
            assert APOLOGY in eve.ask("20 pages please")
            failures = [r for r in stack.logged("bot", "handler failed")
                        if r.get("user_id") == 5024]
            assert len(failures) == 2, failures
        with out.phase("recovery"):
            reset = stack.sh_ok("habitbot fsm reset 5024")
            assert "reset (was in state 'new:target')" in reset, reset
            assert "New habit" in eve.ask("/new Water daily 09:00")
            assert "no conversation in progress" in stack.sh_ok("habitbot fsm reset 5024")
        with out.phase("count"):
            habits = stack.scalar("SELECT count(*) FROM habits WHERE user_id = :u", u=user_id)
            out.lost = eve.unanswered() + (2 - habits)
