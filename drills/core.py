"""What a drill is, what it reports, and the registry `python -m drills` runs.

A drill reproduces one runbook entry on a real stack in three phases: the symptom (the alert
texts, log phrases and `/health` output the runbook lists appear), the recovery (the runbook's
commands, run as written, bring service back) and the count (what should exist after the
incident and does not: reminders not delivered, messages not answered, payments not credited).
A phase that fails does not stop the drill: the failure is written in the notes and the flag
stays false, so a bug in the product shows up as a row that did not recover or lost something.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from drills.harness import Lab


@dataclass
class Outcome:
    drill: str
    symptom_seen: bool = False
    recovered: bool = False
    lost: int = 0
    notes: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)  # phases that failed at least once

    def phase(self, name: str) -> Phase:
        """`with outcome.phase("symptom"):` or `"recovery"`: see `Phase`."""
        return Phase(self, name)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def json_line(self) -> str:
        return json.dumps({"drill": self.drill, "symptom_seen": self.symptom_seen,
                           "recovered": self.recovered, "lost": self.lost})

    @property
    def ok(self) -> bool:
        return self.symptom_seen and self.recovered and self.lost == 0


class Phase:
    """`with outcome.phase("symptom" | "recovery" | "count"):` runs the block; a failure in it
    becomes a note, the rest of the block is skipped and the drill goes on with its next
    phase. A symptom or recovery block that runs to its end sets its flag; a count block
    that fails clears `recovered` (nothing lost is then not proven)."""

    def __init__(self, outcome: Outcome, name: str):
        self.outcome = outcome
        self.name = name

    def __enter__(self) -> Phase:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> bool:
        if exc is None:
            ok = self.name not in self.outcome.failed  # a drill may repeat a phase
            if self.name == "symptom":
                self.outcome.symptom_seen = ok
            elif self.name == "recovery":
                self.outcome.recovered = ok
            return False
        if isinstance(exc, KeyboardInterrupt):
            return False
        self.outcome.failed.add(self.name)
        if self.name == "symptom":
            self.outcome.symptom_seen = False
        elif self.name in ("recovery", "count"):  # count: nothing lost is not proven
            self.outcome.recovered = False
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/drills/" in f.filename]
        where = f" (drills/{frames[-1].filename.rsplit('/drills/', 1)[1]}:{frames[-1].lineno})" \
            if frames else ""
        self.outcome.note(f"{self.name}: {type(exc).__name__}: {str(exc)[:600]}{where}")
        return True


DrillFunction = Callable[[Lab, Outcome], None]


@dataclass(frozen=True)
class Drill:
    name: str        # the runbook section number, e.g. "1.7"
    title: str       # the incident, as the table shows it
    section: str     # the runbook heading this drill rehearses (English runbook)
    run: DrillFunction


DRILLS: dict[str, Drill] = {}


def drill(name: str, title: str, section: str) -> Callable[[DrillFunction], DrillFunction]:
    def register(fn: DrillFunction) -> DrillFunction:
        if name in DRILLS:
            raise ValueError(f"drill {name} registered twice")
        DRILLS[name] = Drill(name, title, section, fn)
        return fn
    return register


def run_drill(lab: Lab, item: Drill) -> Outcome:
    outcome = Outcome(item.name)
    try:
        item.run(lab, outcome)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the stack did not even start: report it as a failed row
        outcome.note(f"setup: {type(exc).__name__}: {str(exc)[:600]}")
    return outcome
