"""The latency benchmark's command line and its per-phase report (``bench.latency``)."""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import machine_info


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.latency", description=description)
    p.add_argument("--rate", type=float, default=10_000, help="clicks per second (default 10000)")
    p.add_argument("--duration", type=float, default=60, help="seconds of steady clicks (default 60)")
    p.add_argument("--warmup", type=float, default=5, help="seconds excluded from the stats (default 5)")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--strategy", default="asof", choices=["asof", "running", "window"])
    p.add_argument(
        "--job-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the job (repeatable), e.g. KAFKA_FETCH_WAIT_MAX_MS=10",
    )
    p.add_argument("--linger-ms", type=float, default=5, help="the click producer's linger.ms (default 5)")
    p.add_argument(
        "--reader-fetch-wait-ms",
        type=int,
        default=5,
        help="fetch.wait.max.ms of the measuring consumer (default 5)",
    )
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the hand-written relay (bench.relay) measured before the job",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=60,
        help="seconds to wait for the last clicks to come out (default 60)",
    )
    p.add_argument("--code", default=".", help="code to measure ('.', a directory or a git revision)")
    p.add_argument("--out", default=None)
    return p


def print_phase(r: dict[str, Any]) -> None:
    print(
        f"[{r['name']}] sent {r['clicks_sent']:,} at {r['achieved_produce_rate'] or 0:,.0f}/s, "
        f"received {r['clicks_received']:,}; CPU {r['cpu_utilisation'] if r['cpu_utilisation'] is not None else '-'} "
        f"cores, broker {r['broker_cpu_utilisation']} cores, whole machine busy {r['machine_busy_cores']} of "
        f"{machine_info()['cpus']} cores, peak RSS {r['peak_rss_mb']:.0f} MB"
    )
    for label, key in (
        ("after warm-up", "latency_after_warmup"),
        ("all", "latency_all"),
        ("up to sink", "up_to_sink_after_warmup"),
        ("sink to reader", "sink_to_consumer_after_warmup"),
    ):
        st = r[key]
        print(
            f"  latency {label:<14} n={st['count']:,}  p50 {st['p50_ms']} ms  p95 {st['p95_ms']} ms  "
            f"p99 {st['p99_ms']} ms  max {st['max_ms']} ms"
        )
    print(
        f"  timeline (per {r['timeline_bucket_s']} s of send time, ms): "
        + "  ".join(f"{t['from_s']}s: p50 {t['p50_ms']:.0f} / p99 {t['p99_ms']:.0f}" for t in r["timeline"])
    )
