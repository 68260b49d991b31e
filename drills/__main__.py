"""`python -m drills [NAME…]`: run the drills (all, or those named, e.g. 1.7 2.3) one after
the other, print one JSON line per drill as it ends, then the table. Exit 1 if any drill did
not see its symptom, did not recover or lost something."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from drills import catalog
from drills.core import DRILLS, Outcome, run_drill
from drills.harness import ROOT, Lab

WORKDIR = ROOT / "var" / "drills"


def runbook_order(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split("."))


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def table(outcomes: list[Outcome]) -> str:
    rows = [("drill", "incident", "symptom seen", "recovered", "data lost")]
    for outcome in outcomes:
        rows.append((outcome.drill, DRILLS[outcome.drill].title, _yes(outcome.symptom_seen),
                     _yes(outcome.recovered), str(outcome.lost)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    for outcome in outcomes:
        for note in outcome.notes:
            lines.append(f"{outcome.drill}: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drills", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="drills to run, by runbook section (default: all)")
    args = parser.parse_args(argv)
    catalog.load()
    known = sorted(DRILLS, key=runbook_order)
    unknown = [name for name in args.names if name not in DRILLS]
    if unknown:
        parser.error(f"unknown drill {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [DRILLS[name] for name in (args.names or known)]
    outcomes = []
    with Lab(WORKDIR) as lab:
        for item in chosen:
            started = time.monotonic()
            print(f"drill {item.name}: {item.title} …", file=sys.stderr, flush=True)
            outcome = run_drill(lab, item)
            outcomes.append(outcome)
            print(outcome.json_line(), flush=True)
            print(f"drill {item.name}: {'ok' if outcome.ok else 'FAILED'} in "
                  f"{time.monotonic() - started:.0f}s (logs: {Path(lab.workdir) / item.name})",
                  file=sys.stderr, flush=True)
    print(table(outcomes), flush=True)
    return 0 if all(outcome.ok for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
