"""Due selection benchmark: does claiming due reminders cost the same with 1,000,000 schedules
as with 10,000, when the same number is due?

Setup: two throwaway databases on the private test cluster, one with 10,000 and one with
1,000,000 habit schedules (10 habits per user), loaded with INSERT … SELECT generate_series and
analysed. In both, the same number of schedules is due (1,000 by default, spread over the
table, fired in the last five minutes); the rest fire later today or tomorrow. Each repetition
calls `reminders.claim_due` (one transaction, committed) and then restores the state with one
UPDATE, a DELETE of the deliveries and a VACUUM, so every repetition does the same work. The
two databases are measured alternately after one warm-up call each. Then the claim SELECT
that claim_due ran is timed alone (rolled back) many times, and EXPLAIN ANALYZE shows its plan
for 1M schedules, also with index scans forbidden (what a scan would cost).

Figures (one JSON line each, after a table for people):
- due_selection.ratio              median claim_due time, 1M ÷ 10k schedules. claim_due also
                                   does per-row work, which is the same in both, so this
                                   ratio alone hides what the due scan costs
- due_selection.query_ratio        the same for the claim SELECT alone. Its joins find each
                                   due row's habit and user by primary key, so it grows with
                                   the B-tree depth and cache misses (2-4x here); a scan of
                                   the 1M tables is 30x and more: target 10
- due_selection.uses_partial_index 1 when the 1M plan reads ix_habit_schedules_due

Statement timings come from SQLAlchemy cursor events on the benchmark's engine. Targets that
are missed print ok=false; the exit code is non-zero only when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from common import (
    SQL_KINDS,
    BenchDatabase,
    BenchError,
    HardStop,
    Interrupted,
    SqlClock,
    figure,
    run_sql,
    table,
)

HABITS_PER_USER = 10
ZONES = ("UTC", "Europe/Moscow", "America/New_York", "Asia/Tokyo", "Europe/Berlin")
CLEANUP_MARGIN = 20.0


@dataclass
class Dataset:
    label: str
    schedules: int
    db: BenchDatabase
    engine: Any = None
    clock: SqlClock = field(default_factory=SqlClock)
    load_seconds: float = 0.0
    totals: list[float] = field(default_factory=list)
    queries: list[float] = field(default_factory=list)
    selects: list[float] = field(default_factory=list)
    per_kind: list[dict[str, float]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- data

LOAD_SQL = (
    """
    INSERT INTO users (id, telegram_id, language, timezone)
    SELECT g, 500000000 + g, 'en', (%(zones)s::text[])[1 + g %% %(zone_count)s]
    FROM generate_series(1, %(users)s) AS g
    """,
    """
    INSERT INTO habits (id, user_id, name, position)
    SELECT g, (g - 1) / %(per_user)s + 1, 'habit ' || g, (g - 1) %% %(per_user)s
    FROM generate_series(1, %(schedules)s) AS g
    """,
    """
    INSERT INTO habit_schedules (id, habit_id, local_time, next_fire_at)
    SELECT f.g, f.g,
           date_trunc('minute', f.fire AT TIME ZONE
                      (%(zones)s::text[])[1 + ((f.g - 1) / %(per_user)s + 1) %% %(zone_count)s]
                     )::time,
           f.fire
    FROM (SELECT g,
                 CASE WHEN g %% %(step)s = 0
                      THEN %(t0)s - make_interval(secs => 5 + g %% 295)
                      ELSE %(t0)s + interval '10 minutes'
                           + make_interval(secs => (g::bigint * 7919) %% 86400)
                 END AS fire
          FROM generate_series(1, %(schedules)s) AS g) AS f
    """,
    "SELECT setval(pg_get_serial_sequence('users', 'id'), %(users)s)",
    "SELECT setval(pg_get_serial_sequence('habits', 'id'), %(schedules)s)",
    "SELECT setval(pg_get_serial_sequence('habit_schedules', 'id'), %(schedules)s)",
    """
    CREATE TABLE bench_due AS
    SELECT id, next_fire_at FROM habit_schedules WHERE next_fire_at <= %(t0)s
    """,
    "ALTER TABLE habit_schedules SET (autovacuum_enabled = false)",
    "ALTER TABLE reminder_deliveries SET (autovacuum_enabled = false)",
)

RESTORE_SQL = (
    "DELETE FROM reminder_deliveries",
    """
    UPDATE habit_schedules AS s SET next_fire_at = d.next_fire_at
    FROM bench_due AS d WHERE s.id = d.id
    """,
)


def load(data: Dataset, due: int, t0: datetime) -> None:
    users = data.schedules // HABITS_PER_USER
    params = {"users": users, "schedules": data.schedules, "per_user": HABITS_PER_USER,
              "step": data.schedules // due, "t0": t0, "zones": list(ZONES),
              "zone_count": len(ZONES)}
    started = time.perf_counter()
    run_sql(data.engine, LOAD_SQL, params)
    run_sql(data.engine, ["VACUUM ANALYZE"], autocommit=True)
    found = run_sql(data.engine, ["SELECT count(*) FROM habit_schedules "
                                  "WHERE next_fire_at <= %(t0)s"], {"t0": t0})[0][0]
    if found != due:
        raise BenchError(f"{data.label}: {found} schedules due after loading, expected {due}")
    data.load_seconds = time.perf_counter() - started


def restore(data: Dataset) -> None:
    run_sql(data.engine, RESTORE_SQL)
    run_sql(data.engine, ["VACUUM habit_schedules, reminder_deliveries"], autocommit=True)


# ---------------------------------------------------------------- measuring

def claim_once(data: Dataset, due: int, t0: datetime, record: bool) -> None:
    from habitbot.services import reminders

    restore(data)
    data.clock.reset()
    started = time.perf_counter()
    result = reminders.claim_due(data.engine, now=t0, limit=max(due, reminders.CLAIM_CHUNK))
    elapsed = time.perf_counter() - started
    if result.claimed != due or len(result.pending_ids) != due:
        raise BenchError(f"{data.label}: claim_due claimed {result.claimed} "
                         f"({len(result.pending_ids)} pending), expected {due}")
    if record:
        data.totals.append(elapsed)
        data.queries.append(data.clock.seconds["claim select"])
        data.per_kind.append(dict(data.clock.seconds))
        data.calls = dict(data.clock.calls)


def select_once(data: Dataset, due: int) -> float:
    """The claim SELECT alone (FOR UPDATE SKIP LOCKED, rows fetched), rolled back."""
    if data.clock.claim_sql is None:
        raise BenchError("the claim query was not seen")
    statement, parameters = data.clock.claim_sql
    with data.engine.connect() as conn:
        started = time.perf_counter()
        rows = conn.exec_driver_sql(statement, parameters).all()
        elapsed = time.perf_counter() - started
        conn.rollback()
    if len(rows) != due:
        raise BenchError(f"{data.label}: the claim query found {len(rows)} rows, expected {due}")
    return elapsed


def explain(data: Dataset, forbid_index_scans: bool = False) -> str:
    """EXPLAIN ANALYZE of the claim query claim_due ran (rolled back); with
    `forbid_index_scans`, the plan PostgreSQL falls back to without index scans."""
    if data.clock.claim_sql is None:
        raise BenchError("the claim query was not seen")
    statement, parameters = data.clock.claim_sql
    restore(data)
    with data.engine.connect() as conn:
        if forbid_index_scans:
            conn.exec_driver_sql("SET LOCAL enable_indexscan = off")
            conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement,
                                    parameters).all()
        conn.rollback()
    return "\n".join(row[0] for row in rows)


def execution_ms(plan: str) -> float:
    for line in plan.splitlines():
        if line.strip().startswith("Execution Time:"):
            return float(line.split(":", 1)[1].split()[0])
    return float("nan")


def _label(schedules: int) -> str:
    if schedules % 1_000_000 == 0:
        return f"{schedules // 1_000_000}M"
    if schedules % 1000 == 0:
        return f"{schedules // 1000}k"
    return f"{schedules:,}"


def run(args: argparse.Namespace, stop: HardStop) -> dict[str, Any]:
    from habitbot.db import make_engine

    sets = [Dataset(_label(args.small), args.small, BenchDatabase("bench_due_selection_small")),
            Dataset(_label(args.large), args.large, BenchDatabase("bench_due_selection_large"))]
    t0 = datetime.now(UTC).replace(microsecond=0)
    try:
        for data in sets:
            print(f"loading {data.schedules:,} schedules ({data.label}) …", flush=True)
            data.db.create()
            data.engine = make_engine(data.db.url, "worker")
            data.clock.attach(data.engine)
            load(data, args.due, t0)
        for data in sets:
            claim_once(data, args.due, t0, record=False)
        for _ in range(args.repeats):
            for data in sets:
                claim_once(data, args.due, t0, record=True)
        for data in sets:
            restore(data)
            select_once(data, args.due)
        for _ in range(args.select_repeats):
            for data in sets:
                data.selects.append(select_once(data, args.due))
        plans = {"small": explain(sets[0]), "large": explain(sets[1]),
                 "large_without_index": explain(sets[1], forbid_index_scans=True)}
        return {"sets": sets, "plans": plans, "due": args.due, "repeats": args.repeats,
                "select_repeats": args.select_repeats}
    finally:
        stop.shield()
        for data in sets:
            if data.engine is not None:
                data.engine.dispose()
            try:
                data.db.drop()
            except Exception as exc:
                print(f"WARNING: could not drop {data.db.name}: {exc}", file=sys.stderr)


def report(r: dict[str, Any]) -> None:
    small, large = r["sets"]
    med = [statistics.median(d.totals) for d in (small, large)]
    qmed = [statistics.median(d.queries) for d in (small, large)]
    smed = [statistics.median(d.selects) for d in (small, large)]
    ratio = med[1] / med[0]
    query_ratio = smed[1] / smed[0]
    plans = r["plans"]
    uses_index = "ix_habit_schedules_due" in plans["large"]

    print(f"EXPLAIN (ANALYZE, BUFFERS) of the claim query, {large.label} schedules:")
    for line in plans["large"].splitlines():
        print(f"    {line}")
    rows: list[tuple[str, Any]] = [
        ("schedules", f"{small.schedules:,} / {large.schedules:,}"),
        ("due in each", r["due"]),
        ("repetitions (median of)", r["repeats"]),
        ("load + ANALYZE, s", f"{small.load_seconds:.1f} / {large.load_seconds:.1f}"),
        ("claim_due median, s", f"{med[0]:.3f} / {med[1]:.3f}"),
        ("claim_due min..max, s",
         f"{min(small.totals):.3f}..{max(small.totals):.3f} / "
         f"{min(large.totals):.3f}..{max(large.totals):.3f}"),
        (f"claim SELECT alone, median of {r['select_repeats']}, ms",
         f"{smed[0] * 1000:.2f} / {smed[1] * 1000:.2f}"),
        ("claim SELECT inside claim_due, median, ms",
         f"{qmed[0] * 1000:.1f} / {qmed[1] * 1000:.1f}"),
        ("claim SELECT in EXPLAIN ANALYZE, ms",
         f"{execution_ms(plans['small']):.1f} / {execution_ms(plans['large']):.1f}"),
        (f"  the same, {large.label}, index scans forbidden, ms",
         f"{execution_ms(plans['large_without_index']):.1f}"),
    ]
    kinds = [k for k, _ in SQL_KINDS] + ["other"]
    for kind in kinds:
        values = [statistics.median(p.get(kind, 0.0) for p in d.per_kind) for d in (small, large)]
        if any(values):
            calls = large.calls.get(kind, 0)
            rows.append((f"  {kind} ({calls} executions), ms",
                         f"{values[0] * 1000:.1f} / {values[1] * 1000:.1f}"))
    in_sql = [sum(p.values()) for p in large.per_kind]
    outside = statistics.median(t - s for t, s in zip(large.totals, in_sql, strict=True))
    rows.append((f"  outside SQL (Python, commit), ms, {large.label}",
                 f"{outside * 1000:.1f}"))
    rows.append(("plan reads ix_habit_schedules_due", "yes" if uses_index else "NO"))
    table(rows, f"due selection benchmark (values: {small.label} / {large.label} schedules)")

    figure("due_selection.ratio", ratio, "ratio", "<= 1.5")
    figure("due_selection.query_ratio", query_ratio, "ratio", "<= 10")
    figure("due_selection.uses_partial_index", int(uses_index), "bool", "== 1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--due", type=int, default=1000, help="due schedules in each database")
    parser.add_argument("--small", type=int, default=10_000, help="schedules, small database")
    parser.add_argument("--large", type=int, default=1_000_000,
                        help="schedules, large database")
    parser.add_argument("--repeats", type=int, default=7, help="measured claims per database")
    parser.add_argument("--select-repeats", type=int, default=25,
                        help="measured runs of the claim SELECT alone per database")
    parser.add_argument("--timeout", type=float, default=420.0,
                        help="hard limit of the whole run, seconds")
    args = parser.parse_args(argv)
    if args.due < 1 or args.repeats < 1 or args.select_repeats < 1:
        parser.error("--due, --repeats and --select-repeats must be positive")
    for size in (args.small, args.large):
        if size % HABITS_PER_USER or size < args.due or size % args.due:
            parser.error(f"--small/--large must be multiples of {HABITS_PER_USER} and of --due")
    if args.timeout <= CLEANUP_MARGIN + 10:
        parser.error(f"--timeout must be above {CLEANUP_MARGIN + 10:.0f}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = HardStop(args.timeout - CLEANUP_MARGIN).arm()
    try:
        result = run(args, stop)
    except Interrupted as exc:
        reason = "timed out" if str(exc) == "SIGALRM" else f"interrupted ({exc})"
        print(f"due selection benchmark {reason}", file=sys.stderr)
        return HardStop.exit_code(exc)
    except BenchError as exc:
        print(f"due selection benchmark could not run: {exc}", file=sys.stderr)
        return 1
    finally:
        stop.shield()
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
