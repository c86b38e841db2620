"""Instruction counts of the clicks job and its hand-written baseline, per revision.

Wall times on this shared 2-core machine drift by tens of percent within an
hour; instruction counts (``valgrind --tool=callgrind``, every thread of the
process) repeat to a fraction of a percent. This runs the baseline once and
``dataflows.clicks`` once per given revision on one small seeded workload on
the local broker, and prints, per run, all instructions, those of start-up
(the imports and the GC set-up, measured apart; building the flow and
connecting to Kafka count in the rest) and the rest per event.

    python -m bench.instructions 3a0641f HEAD      # about 2 minutes per run

It needs ``valgrind``. Instruction counts say nothing about waiting, threads
running side by side or cache misses: ``bench.run`` measures those.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import REPO, job_env, resolve_code_dir, table

#: What the job imports and runs at start-up (the flow itself is built later).
JOB_STARTUP = "import bytewax.run, dataflows.clicks\nfrom dataflows.runtime import tune_gc\ntune_gc()\n"
#: What the baseline imports before its first poll.
BASELINE_STARTUP = (
    "import confluent_kafka, orjson\n"
    "import bench.common, connectors.kafka_io, operators.dead_letters\n"
    "import operators.join_output, operators.record_mapping\n"
)


def instructions(command: list[str], env: dict[str, str], cwd: Path) -> int:
    """Instructions executed by ``command`` under callgrind (all its threads)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p", *command],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        )
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    found = re.findall(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if not found:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(found[-1].replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    p.add_argument("revisions", nargs="+", help="code to measure: '.', a directory or a git revision")
    p.add_argument("--clicks", type=int, default=50_000)
    p.add_argument("--users", type=int, default=1_000)
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        p.error("valgrind is not installed")

    from clickstream.broker import LocalBroker
    from clickstream.generate import GenerateOptions, produce

    options = GenerateOptions(
        users=args.users,
        clicks=args.clicks,
        versions_per_user=6,
        seed=3,
        start="2026-01-01T00:00:00+00:00",
        span_seconds=6 * 3600,
        bad_fraction=0.01,
        unknown_fraction=0.03,
        out_of_order_ms=0,
        profiles_first=True,
    )
    rows = []
    with LocalBroker.start() as broker:
        broker.create_topics({"user_clicks": 4, "user_profiles": 2})
        report = produce(
            options, {"bootstrap.servers": broker.bootstrap_servers}, "user_profiles", "user_clicks"
        )
        events = report.profiles_produced + args.clicks
        runs: list[tuple[str, Path, list[str], dict[str, str], str]] = [
            (
                "baseline",
                REPO,
                [
                    *("-m", "bench.baseline", "--clicks-topic", "user_clicks"),
                    *(
                        "--profiles-topic",
                        "user_profiles",
                        "--out-topic",
                        "base_joined",
                        "--dlq-topic",
                        "base_dlq",
                    ),
                ],
                {},
                BASELINE_STARTUP,
            )
        ]
        for i, revision in enumerate(args.revisions):
            topics = {
                "JOINED_TOPIC": f"joined_{i}",
                "UNMATCHED_TOPIC": f"unmatched_{i}",
                "DLQ_TOPIC": f"dlq_{i}",
            }
            runs.append(
                (
                    f"clicks {revision}",
                    resolve_code_dir(revision),
                    ["-m", "bytewax.run", "dataflows.clicks"],
                    topics,
                    JOB_STARTUP,
                )
            )
        broker.create_topics({"base_joined": 4, "base_dlq": 1})
        for i in range(len(args.revisions)):
            broker.create_topics({f"joined_{i}": 4, f"unmatched_{i}": 1, f"dlq_{i}": 1})
        for name, code, command, extra, startup in runs:
            env = job_env(code, broker.bootstrap_servers, {"KAFKA_TAIL": "false", **extra})
            print(f"measuring {name} ...", flush=True)
            total = instructions([sys.executable, *command], env, code)
            start = instructions([sys.executable, "-c", startup], env, code)
            rows.append(
                {
                    "run": name,
                    "instructions (M)": f"{total / 1e6:,.0f}",
                    "start-up (M)": f"{start / 1e6:,.0f}",
                    "per event after start-up": f"{(total - start) / events:,.0f}",
                }
            )
    print(f"\n{args.clicks:,} clicks, {args.users:,} users, {events:,} events in all")
    print(table(rows, [(k, k) for k in rows[0]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
