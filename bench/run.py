"""Throughput benchmark: the jobs against hand-written baselines, on one seeded workload.

``python -m bench.run`` (quick: ``--clicks 200000 --users 20000``). It

1. starts the local broker (Tansu) and creates the input topics;
2. produces one seeded workload (``clickstream.generate``): clicks, profiles
   (``--update-fraction``: profile updates after each user's first version, as
   a fraction of the clicks), bad records of every kind (``--bad-fraction``) and
   clicks of unknown users (``--unknown-fraction``), event times in the past
   (a backfill);
3. runs, one after another, on that same data (each with its own fresh output
   topics, deleted afterwards):

   ===============  ==========================================================
   baseline         ``python -m bench.baseline``: hand-written consume ->
                    validate -> as-of lookup -> encode -> produce loop
   asof             ``python -m bytewax.run dataflows.clicks`` (default
                    strategy), ``KAFKA_TAIL=false``, 1 process
   asof-2proc       the same in 2 processes (``-i 0/1 -a "...;..."``)
   running          ``JOIN_STRATEGY=running``
   window           ``JOIN_STRATEGY=window``
   top-baseline     ``python -m bench.baseline_top``: hand-written count per
                    window loop
   top_users        ``python -m bytewax.run dataflows.top_users``
   asof-recovery    ``dataflows.clicks`` with a recovery store
                    created by the launcher (``clickstream.launch``:
                    ``bytewax.run ... -r DIR -s 5 -b 0``)
   ===============  ==========================================================

4. checks every run's output (a run with a wrong output is FAILED, however
   fast), prints a table and writes ``bench/results/<timestamp>.json``.

Columns: see ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time
from pathlib import Path

import orjson

from bench.common import (
    REPO,
    RESULTS_DIR,
    code_identity,
    job_env,
    machine_info,
    markdown_table,
    resolve_code_dir,
    table,
    timestamp,
)
from bench.outcome import ALL_RUNS, COLUMNS, targets
from bench.runs import Bench


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    w = p.add_argument_group("workload")
    w.add_argument("--clicks", type=int, default=1_000_000, help="valid clicks (default 1M)")
    w.add_argument("--users", type=int, default=100_000, help="users with a profile (default 100k)")
    w.add_argument(
        "--update-fraction",
        type=float,
        default=0.10,
        help="profile updates (versions after each user's first) as a fraction of "
        "clicks (default 0.10): versions per user = 1 + round(f * clicks / users)",
    )
    w.add_argument(
        "--bad-fraction",
        type=float,
        default=0.01,
        help="bad records per topic, fraction of its good records (default 0.01)",
    )
    w.add_argument(
        "--unknown-fraction", type=float, default=0.03, help="clicks of users with no profile (default 0.03)"
    )
    w.add_argument("--span-hours", type=float, default=6.0, help="event-time span (default 6 h)")
    w.add_argument(
        "--start",
        default="2026-01-01T00:00:00+00:00",
        help="event time of the first event; must be in the past (backfill)",
    )
    w.add_argument("--out-of-order-ms", type=int, default=2000)
    w.add_argument("--seed", type=int, default=2026)
    w.add_argument("--click-partitions", type=int, default=4)
    w.add_argument("--profile-partitions", type=int, default=2)
    r = p.add_argument_group("runs")
    r.add_argument(
        "--runs", default=",".join(ALL_RUNS), help="comma-separated subset of: " + ", ".join(ALL_RUNS)
    )
    r.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the whole sequence N times (on the same data) and report, per run, "
        "the repetition with the median wall time; all are kept in the JSON",
    )
    r.add_argument("--timeout", type=float, default=600.0, help="per run, seconds (default 600)")
    r.add_argument(
        "--window-timeout",
        type=float,
        default=300.0,
        help="the window run's own limit (default 300 s): Bytewax's event-time windows "
        "spin on backfill data (upstream #578) and take minutes; a run stopped by its "
        "limit is TIMEOUT, with the rate it had reached",
    )
    r.add_argument(
        "--code",
        default=".",
        help="code to measure: '.' (this work tree, default), a directory, or a git "
        "revision such as HEAD (exported with git archive)",
    )
    r.add_argument(
        "--baseline-consumer",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra librdkafka consumer property for both baselines (repeatable)",
    )
    r.add_argument(
        "--snapshot-interval",
        type=int,
        default=5,
        help="asof-recovery: RECOVERY_SNAPSHOT_SECONDS, whole seconds (default 5)",
    )
    r.add_argument("--out", default=None, help="results JSON path (default bench/results/<ts>.json)")
    r.add_argument(
        "--wait-quiet",
        type=float,
        default=30.0,
        metavar="S",
        help="before each run, wait up to S seconds until other processes use less "
        "than 0.3 of a core (default 30; 0: do not wait). The 'other CPU s' column "
        "shows what they used during the run anyway",
    )
    r.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    r.add_argument(
        "--profile",
        action="store_true",
        help="run every measured process under py-spy (idle stacks included) and "
        "write folded stacks next to the logs; slows the runs: numbers are then "
        "not comparable",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = sorted(set(runs) - set(ALL_RUNS))
    if unknown:
        raise SystemExit(f"unknown runs: {unknown}; choose from {ALL_RUNS}")
    from clickstream.broker import LocalBroker

    code_dir = resolve_code_dir(args.code)
    code_at_start = code_identity(code_dir)
    stamp = timestamp()
    log_dir = RESULTS_DIR / f"{stamp}-logs"
    out_path = Path(args.out) if args.out else RESULTS_DIR / f"{stamp}.json"
    started = time.monotonic()
    # Warm the page cache so the first measured run does not pay cold imports.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import bytewax.run, confluent_kafka, orjson, "
            "dataflows.clicks, dataflows.top_users, bench.baseline",
        ],
        env=job_env(code_dir, "127.0.0.1:1"),
        cwd=str(REPO),
        check=False,
    )
    with LocalBroker.start() as broker:
        bench = Bench(args, broker, code_dir, log_dir)
        bench.generate()
        for bench.rep, name in [(rep, n) for rep in range(args.repeat) for n in ALL_RUNS]:
            if name not in runs:
                continue
            if name == "baseline":
                bench.run_baseline()
            elif name == "asof":
                bench.run_clicks(name, {})
            elif name == "asof-nested":
                bench.run_clicks(name, bench.nested_workload())
            elif name == "interval":
                from bench.interval import INTERVAL_ENV

                bench.run_clicks(name, INTERVAL_ENV, exact_matched=False, pairs=True)
            elif name == "asof-2proc":
                bench.run_clicks(name, {}, processes=2)
            elif name == "running":
                bench.run_clicks(name, {"JOIN_STRATEGY": "running"}, exact_matched=False)
            elif name == "window":
                # lateness over the whole backfill: a shard's clock follows its newest
                # record, so with 60 s most clicks would be late (unmatched) and the
                # row would not measure the join (see docs/performance.md)
                lateness = str(round(args.span_hours * 3600) + 3600)
                bench.run_clicks(
                    name,
                    {"JOIN_STRATEGY": "window", "ALLOWED_LATENESS_SECONDS": lateness},
                    exact_matched=False,
                )
            elif name == "top-baseline":
                bench.run_top_baseline()
            elif name == "top_users":
                bench.run_top_users()
            elif name == "asof-recovery":
                bench.run_clicks(name, {}, recovery=True)
        bench.pick_representatives()
        rows = bench.finish_rows()
        bench.admin = None  # release the admin client before the broker stops
        gc.collect()
    w = bench.workload
    print()
    print(
        f"workload: {w['events']:,} click events ({w['clicks_valid']:,} valid + {w['clicks_bad']:,} bad), "
        f"{w['profiles_valid']:,} profile versions + {w['profiles_bad']:,} bad, "
        f"{args.users:,} users; {args.click_partitions} click / {args.profile_partitions} profile partitions"
    )
    print(table(rows, COLUMNS))
    if args.markdown:
        print()
        print(markdown_table(rows, COLUMNS))
    print()
    for line in targets(bench.results):
        print(line)
    if code_identity(code_dir) != code_at_start:
        print(
            "warning: the measured code changed during the run (see git status); "
            "use --code HEAD to measure a fixed commit",
            file=sys.stderr,
        )
    if args.profile:
        print(
            "note: profiled run (py-spy): times are inflated and the CPU columns count py-spy, not the jobs",
            file=sys.stderr,
        )
    failed = [n for n, r in bench.results.items() if r["status"] == "FAILED"]
    timeouts = [n for n, r in bench.results.items() if r["status"] == "TIMEOUT"]
    if timeouts:
        print(f"TIMEOUT (output not checked): {', '.join(timeouts)}", file=sys.stderr)
    out = {
        "timestamp": stamp,
        "command": [sys.executable, "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])],
        "machine": machine_info(),
        "code": code_at_start,
        "code_changed_during_run": code_identity(code_dir) != code_at_start,
        "profiled": bool(args.profile),
        "workload": w,
        "runs": bench.results,
        "table": rows,
        "targets": targets(bench.results),
        "total_seconds": round(time.monotonic() - started, 1),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    print(f"\nresults: {out_path}  logs: {log_dir}")
    if failed:
        print(f"FAILED runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
