"""``make demo``: the clicks job and the top_users job end to end on a local broker.

1. start the local Kafka-protocol broker (Tansu) on a free loopback port;
2. create the topics;
3. generate seeded profiles and clicks (with bad records and unknown users);
4. run the clicks job (``python -m clickstream.launch clicks``, the one launcher)
   with ``KAFKA_TAIL=false`` and read its output topics back;
5. run the top_users job on the same clicks (its dead letters to
   ``top_users_dead_letters``), print a table of the top users of each
   30-minute window and draw them in ``demo-output/top_users.png``;
6. stop the broker; print a summary that accounts for every record of the
   clicks job and write it to ``demo-output/summary.json``. Exit status 0 only
   if every record is accounted for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TypedDict, cast

import orjson

from clickstream.broker import LocalBroker
from clickstream.generate import GenerateOptions, produce
from clickstream.launch import launcher_command
from clickstream.read_topic import read_all
from clickstream.tooling import table

TOPICS = {
    "user_clicks": 4,
    "user_profiles": 2,
    "joined_data": 4,
    "unmatched_clicks": 1,
    "dead_letters": 1,
    "top_users": 1,
    "late_clicks": 1,
    "top_users_dead_letters": 1,
}


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 66 - len(title)), flush=True)


def run_job(job: str, bootstrap: str, workers: int, extra_env: dict[str, str]) -> float:
    env = dict(os.environ)
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TAIL": "false",
            "PYTHONPATH": os.pathsep.join(
                [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
            ),
        }
    )
    env.update(extra_env)
    env.pop("RECOVERY_DIR", None)  # the demo runs without a recovery store
    started = time.monotonic()
    proc = subprocess.run(launcher_command(job, "-w", str(workers)), env=env)
    if proc.returncode != 0:
        raise SystemExit(f"demo: the {job} job failed with status {proc.returncode}")
    return time.monotonic() - started


class OutputSummary(TypedDict):
    """What :func:`summarise_outputs` counted in the clicks job's output topics."""

    joined_records: int
    joined_with_profile: int
    joined_without_profile: int
    unmatched_topic_records: int
    dead_letters: int
    dead_letters_by_reason: dict[str, int]
    samples: list[dict[str, Any]]


def summarise_outputs(bootstrap: str) -> OutputSummary:
    joined = read_all(bootstrap, "joined_data")
    unmatched_topic = read_all(bootstrap, "unmatched_clicks")
    dead = read_all(bootstrap, "dead_letters")
    matched: list[dict[str, Any]] = []
    null_profile = 0
    for rec in joined:
        body = orjson.loads(cast(bytes, rec.value))  # the job never writes a null value
        if body["profile"] is None:
            null_profile += 1
        elif len(matched) < 3:
            matched.append(body)
    reasons: Counter = Counter()
    for rec in dead:
        headers = dict(rec.headers or [])
        reasons[(headers.get("dlq.topic", b"?").decode(), headers.get("dlq.reason", b"?").decode())] += 1
    return {
        "joined_records": len(joined),
        "joined_with_profile": len(joined) - null_profile,
        "joined_without_profile": null_profile,
        "unmatched_topic_records": len(unmatched_topic),
        "dead_letters": len(dead),
        "dead_letters_by_reason": {f"{t}/{r}": n for (t, r), n in sorted(reasons.items())},
        "samples": matched,
    }


def print_top_users(windows: list[dict], seconds: float, late: int) -> None:
    """One row per 30-minute window: its top 5 users and their clicks."""
    print(f"{len(windows)} windows in {seconds:.1f} s, {late} late clicks")
    rows = []
    for window in sorted(windows, key=lambda w: w["window_start"]):
        span = window["window_start"][11:16] + "-" + window["window_end"][11:16]
        rows.append((span, "  ".join(f"{t['user_id']}({t['clicks']})" for t in window["top"][:5])))
    print("\n".join(table(rows, ["window (UTC)", "top users (clicks)"])))


def write_top_users_chart(windows: list[dict], path: Path) -> Path:
    """A PNG: one panel per window, horizontal bars of its top users."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = sorted(windows, key=lambda w: w["window_start"])
    cols = 4
    rows = max(1, -(-len(windows) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, window in zip(axes.flat, windows, strict=False):
        ax.set_visible(True)
        top = list(reversed(window["top"]))
        ax.barh([t["user_id"] for t in top], [t["clicks"] for t in top], color="#3b7dd8")
        ax.set_title(f"{window['window_start'][11:16]}-{window['window_end'][11:16]} UTC", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle("Top users per 30-minute window (clicks)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clickstream.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--clicks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="demo-output")
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    total_started = time.monotonic()

    _section("local broker")
    with LocalBroker.start() as broker:
        bootstrap = broker.bootstrap_servers
        broker.create_topics(TOPICS)
        print(f"Tansu on {bootstrap}; topics: " + ", ".join(f"{t}({n})" for t, n in TOPICS.items()))

        _section("generating data")
        options = GenerateOptions(
            users=args.users,
            clicks=args.clicks,
            versions_per_user=3,
            seed=2026,
            span_seconds=6 * 3600,
            bad_fraction=0.01,
            unknown_fraction=0.03,
            out_of_order_ms=5_000,
            profiles_first=False,
        )
        report = produce(options, {"bootstrap.servers": bootstrap}, "user_profiles", "user_clicks")
        print(report.format())
        if report.delivery_failures:
            print("demo: the generator could not deliver every record", file=sys.stderr)
            return 1

        _section(f"python -m clickstream.launch clicks -- -w {args.workers}")
        job_seconds = run_job("clicks", bootstrap, args.workers, {})
        outputs = summarise_outputs(bootstrap)

        _section(f"python -m clickstream.launch top_users -- -w {args.workers}")
        top_seconds = run_job("top_users", bootstrap, args.workers, {"DLQ_TOPIC": "top_users_dead_letters"})
        windows = [orjson.loads(cast(bytes, r.value)) for r in read_all(bootstrap, "top_users")]  # never null
        late_count = len(read_all(bootstrap, "late_clicks"))
    print_top_users(windows, top_seconds, late_count)
    chart = write_top_users_chart(windows, out_dir / "top_users.png")
    print(f"chart written to {chart}")

    _section("summary")
    valid_clicks = report.clicks_produced
    bad_in = report.bad_total
    accounted = outputs["joined_records"] + outputs["unmatched_topic_records"]
    balanced = accounted == valid_clicks and outputs["dead_letters"] == bad_in
    summary = {
        "records_in": {
            "clicks_valid": valid_clicks,
            "clicks_of_unknown_users": report.unknown_user_clicks,
            "profiles_valid": report.profiles_produced,
            "bad_records": bad_in,
        },
        "records_out": {k: v for k, v in outputs.items() if k != "samples"},
        "every_record_accounted_for": balanced,
        "job_seconds": round(job_seconds, 2),
        "top_users": {
            "windows": len(windows),
            "late_clicks": late_count,
            "job_seconds": round(top_seconds, 2),
            "chart": str(out_dir / "top_users.png"),
        },
        "clicks_per_second": round(valid_clicks / job_seconds) if job_seconds else None,
        "total_seconds": round(time.monotonic() - total_started, 2),
    }
    rows = [
        ("clicks in (valid)", valid_clicks),
        ("  of unknown users", report.unknown_user_clicks),
        ("profile versions in (valid)", report.profiles_produced),
        ("bad records in (both topics)", bad_in),
        ("joined_data records", outputs["joined_records"]),
        ("  joined with a profile", outputs["joined_with_profile"]),
        ("  unmatched (profile: null)", outputs["joined_without_profile"]),
        ("unmatched_clicks records", outputs["unmatched_topic_records"]),
        ("dead_letters records", outputs["dead_letters"]),
    ]
    print("\n".join(table(rows, align="lr")))
    print("dead letters by reason:")
    print("\n".join(table(outputs["dead_letters_by_reason"].items(), align="lr", indent="  ")))
    print(
        f"job time {job_seconds:.1f} s including start-up "
        f"({summary['clicks_per_second']} clicks/s); demo total {summary['total_seconds']} s"
    )
    print("sample joined records:")
    for sample in outputs["samples"]:
        print("  " + json.dumps(sample)[:300])
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary written to {out_dir / 'summary.json'}")
    if not balanced:
        print("demo: NOT every record is accounted for", file=sys.stderr)
        return 1
    print("every record accounted for: valid clicks in = joined + unmatched; bad in = dead letters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
