"""Memory of the clicks job over a long backfill where users come and go (TTL eviction).

``python -m bench.memory`` (default 5M clicks; smaller: ``--clicks 1000000``).

Workload (its own seeded generator, not ``clickstream.generate``): ``--users``
users (default clicks / 25); user ``i`` is active only in a band of
``--band-minutes`` of event time starting at ``i / users * (span - band)``, so
the set of active users slides through the ``--span-hours`` span (about
``users * band / span`` active at any time). Each user has a profile version at
the start of its band and an update in its middle; each click picks one of the
users active at its event time. Profiles are produced first (in event-time
order), then clicks (in event-time order, ``--out-of-order-ms`` jitter).

The job runs with ``KAFKA_TAIL=false``, ``PROFILE_TTL_SECONDS`` = the band and a
small ``ALLOWED_LATENESS_SECONDS`` (``--lateness-seconds``), so a user's
versions are evicted about a band after its last one. While it runs, the RSS of
the job is sampled every ``--sample-interval`` seconds and a consumer counts the
joined records written so far (the events processed). Prints a table of events
processed vs RSS and the peak RSS up to 1M events vs over the whole run, and
writes ``bench/results/memory-<ts>.json``.

Note: the job reads the profiles topic independently of the clicks topic, so in
a backfill it reads profiles *ahead* of the clicks that need them; those are
held until the clicks catch up (nothing is evicted before the clicks watermark
passes it). The peak therefore reflects how far ahead the profiles are read, on
top of the TTL-bounded state; see docs/performance.md.
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    RESULTS_DIR,
    bytewax_cmd,
    code_identity,
    job_env,
    log_tail,
    machine_info,
    resolve_code_dir,
    run_measured,
    table,
    timestamp,
)

TOPICS = {"mem_clicks": 4, "mem_profiles": 2, "mem_joined": 4, "mem_unmatched": 1, "mem_dlq": 1}
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a backfill


def produce_workload(bootstrap: str, args) -> dict[str, Any]:
    from confluent_kafka import Producer

    from connectors.kafka_io import produce_with_backpressure

    users = args.users or max(1, args.clicks // 25)
    span_ms = int(args.span_hours * 3600_000)
    band_ms = int(args.band_minutes * 60_000)
    if band_ms >= span_ms:
        raise SystemExit("--band-minutes must be shorter than the span")
    slide = span_ms - band_ms
    width = len(str(users))
    rng = random.Random(args.seed)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": "20",
            "batch.num.messages": "10000",
            "queue.buffering.max.messages": "1000000",
            "enable.idempotence": "true",
        }
    )
    failures = [0]

    def on_delivery(err, _msg) -> None:
        if err is not None:
            failures[0] += 1

    def send(topic: str, key: bytes, value: bytes) -> None:
        produce_with_backpressure(producer, topic, value, key, on_delivery=on_delivery)

    def band_start(i: int) -> int:
        return START_MS + (i * slide) // users

    started = time.monotonic()
    # Profiles: version 1 at the band's start, version 2 in its middle, merged by time.
    firsts = ((band_start(i), i, 1) for i in range(users))
    seconds = ((band_start(i) + band_ms // 2, i, 2) for i in range(users))
    profiles = 0
    for ts, i, version in heapq.merge(firsts, seconds):
        user = f"m{i:0{width}d}"
        value = orjson.dumps(
            {
                "user_id": user,
                "updated_at": ts,
                "version": version,
                "tier": ("free", "pro")[rng.random() < 0.3],
                "band": i,
            }
        )
        send("mem_profiles", user.encode(), value)
        profiles += 1
        if profiles % 5000 == 0:
            producer.poll(0)
    clicks = args.clicks
    jitter = args.out_of_order_ms
    for k in range(clicks):
        t = START_MS + (k * span_ms) // clicks
        # Users whose band [start, start + band) covers t.
        lo = max(0, -(-((t - START_MS - band_ms + 1) * users) // slide))
        hi = min(users - 1, ((t - START_MS) * users) // slide)
        if hi < lo:
            hi = lo
        i = rng.randint(lo, hi)
        user = f"m{i:0{width}d}"
        ts = max(START_MS, t - rng.randint(0, jitter)) if jitter else t
        value = orjson.dumps(
            {"user_id": user, "ts": ts, "page": f"/p/{rng.randint(1, 300)}", "action": "view", "k": k}
        )
        send("mem_clicks", user.encode(), value)
        if k % 5000 == 0:
            producer.poll(0)
    remaining = producer.flush(300)
    if remaining or failures[0]:
        raise SystemExit(f"memory bench: {remaining + failures[0]} records not delivered")
    return {
        "users": users,
        "profiles": profiles,
        "clicks": clicks,
        "span_hours": args.span_hours,
        "band_minutes": args.band_minutes,
        "active_users_at_a_time": round(users * band_ms / slide),
        "produce_seconds": round(time.monotonic() - started, 1),
    }


class OutputCounter(threading.Thread):
    """Counts records arriving on the joined topic (events processed so far)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        super().__init__(daemon=True)
        from confluent_kafka import Consumer, TopicPartition

        from connectors.kafka_io import reader_config

        self._consumer = Consumer(reader_config(bootstrap, **{"enable.partition.eof": "false"}))
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.count = 0
        self.matched = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        marker = b',"profile":null,'
        while not self._stop_event.is_set():
            batch = self._consumer.consume(5000, 0.1)
            for msg in batch:
                if msg.error() is None:
                    self.count += 1
                    if marker not in msg.value():
                        self.matched += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self._consumer.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    p.add_argument("--clicks", type=int, default=5_000_000)
    p.add_argument("--users", type=int, default=0, help="default: clicks / 25")
    p.add_argument("--span-hours", type=float, default=48.0)
    p.add_argument(
        "--band-minutes",
        type=float,
        default=60.0,
        help="how long each user is active; also PROFILE_TTL_SECONDS (default 60)",
    )
    p.add_argument("--lateness-seconds", type=float, default=10.0)
    p.add_argument("--out-of-order-ms", type=int, default=1000)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--strategy", default="asof", choices=["asof", "running", "window"])
    p.add_argument(
        "--job-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the job (repeatable), e.g. KAFKA_QUEUED_MAX_MESSAGES_KBYTES=8192",
    )
    p.add_argument("--sample-interval", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--code", default=".", help="code to measure ('.', a directory or a git revision)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from clickstream.broker import LocalBroker

    code_dir = resolve_code_dir(args.code)
    code_at_start = code_identity(code_dir)
    stamp = timestamp()
    log_path = RESULTS_DIR / f"memory-{stamp}.log"
    problems: list[str] = []
    with LocalBroker.start() as broker:
        bootstrap = broker.bootstrap_servers
        broker.create_topics(TOPICS)
        print(f"producing {args.clicks:,} clicks ...", flush=True)
        workload = produce_workload(bootstrap, args)
        print(
            f"produced {workload['clicks']:,} clicks and {workload['profiles']:,} profile versions of "
            f"{workload['users']:,} users (~{workload['active_users_at_a_time']:,} active at a time) "
            f"in {workload['produce_seconds']} s",
            flush=True,
        )
        env = job_env(
            code_dir,
            bootstrap,
            {
                "CLICKS_TOPIC": "mem_clicks",
                "PROFILES_TOPIC": "mem_profiles",
                "JOINED_TOPIC": "mem_joined",
                "UNMATCHED_TOPIC": "mem_unmatched",
                "DLQ_TOPIC": "mem_dlq",
                "KAFKA_TAIL": "false",
                "JOIN_STRATEGY": args.strategy,
                "PROFILE_TTL_SECONDS": f"{args.band_minutes * 60:g}",
                "ALLOWED_LATENESS_SECONDS": f"{args.lateness_seconds:g}",
                **dict(kv.split("=", 1) for kv in args.job_env),
            },
        )
        counter = OutputCounter(bootstrap, "mem_joined", TOPICS["mem_joined"])
        counter.start()
        points: list[dict[str, Any]] = []
        next_at = [0.0]

        def on_sample(t: float, rss: int, cpu: float) -> None:
            if t >= next_at[0]:
                next_at[0] = t + args.sample_interval
                points.append(
                    {
                        "t_s": round(t, 1),
                        "events": counter.count,
                        "rss_mb": round(rss / 2**20, 1),
                        "cpu_s": round(cpu, 1),
                    }
                )

        print(f"running dataflows.clicks ({args.strategy}) ...", flush=True)
        measured = run_measured(
            [bytewax_cmd("clicks")],
            env,
            log_path,
            args.timeout,
            broker_pid=broker.process.pid,
            on_sample=on_sample,
            sample_interval_s=0.2,
        )
        deadline = time.monotonic() + 60
        while counter.count < args.clicks and time.monotonic() < deadline:
            time.sleep(0.2)
        counter.stop()
    if measured["timed_out"]:
        problems.append(f"timed out after {args.timeout:g} s")
    elif any(measured["returncodes"]):
        problems.append(f"exit status {measured['returncodes']}")
    if counter.count != args.clicks:
        problems.append(f"joined records {counter.count:,} != clicks {args.clicks:,}")

    def peak_until(limit: int | None) -> float | None:
        vals = [pt["rss_mb"] for pt in points if limit is None or pt["events"] <= limit]
        return max(vals) if vals else None

    peak_1m = peak_until(1_000_000)
    peak_all = max(peak_until(None) or 0, round(measured["peak_rss_bytes"] / 2**20, 1))
    # A small table: RSS at about every tenth of the run.
    rows = []
    step = max(1, args.clicks // 10)
    marks = list(range(0, args.clicks + 1, step))
    for mark in marks:
        pts = [pt for pt in points if pt["events"] >= mark and pt["rss_mb"] > 1]
        if not pts:
            continue
        pt = pts[0]
        if rows and rows[-1]["events"] == f"{pt['events']:,}":
            continue
        peak_so_far = max(q["rss_mb"] for q in points if q["t_s"] <= pt["t_s"])
        rows.append(
            {
                "events": f"{pt['events']:,}",
                "t": f"{pt['t_s']:.0f}",
                "rss": f"{pt['rss_mb']:.0f}",
                "peak": f"{peak_so_far:.0f}",
                "cpu": f"{pt['cpu_s']:.0f}",
            }
        )
    wall = measured["wall_s"]
    result = {
        "timestamp": stamp,
        "command": [sys.executable, "-m", "bench.memory", *(argv if argv is not None else sys.argv[1:])],
        "machine": machine_info(),
        "code": code_at_start,
        "status": "ok" if not problems else "FAILED",
        "problems": problems,
        "workload": workload,
        "strategy": args.strategy,
        "job_env": dict(kv.split("=", 1) for kv in args.job_env),
        "ttl_seconds": args.band_minutes * 60,
        "lateness_seconds": args.lateness_seconds,
        "wall_s": round(wall, 2),
        "events_per_s": round(args.clicks / wall, 1),
        "cpu_s": round(measured["cpu_s"], 2),
        "matched": counter.matched,
        "peak_rss_mb_until_1m_events": peak_1m,
        "peak_rss_mb": peak_all,
        "samples": points,
        "log": str(log_path),
    }
    print()
    print(
        f"{args.clicks:,} clicks in {wall:.1f} s ({args.clicks / wall:,.0f}/s), CPU {measured['cpu_s']:.1f} s, "
        f"matched {counter.matched:,}"
    )
    print(
        table(
            rows,
            [
                ("events", "events processed"),
                ("t", "t s"),
                ("rss", "RSS MB"),
                ("peak", "peak so far MB"),
                ("cpu", "CPU s"),
            ],
        )
    )
    print(
        f"peak RSS up to 1M events: {peak_1m} MB; over the whole run ({args.clicks:,}): {peak_all} MB"
        + (f" ({(peak_all / peak_1m - 1) * 100:+.0f}%)" if peak_1m else "")
    )
    if peak_1m and args.clicks > 1_000_000:
        verdict = "met" if peak_all <= peak_1m * 1.10 and not problems else "MISSED"
        print(f"target RSS flat 1M vs {args.clicks / 1e6:g}M (within 10%): {verdict}")
    if problems:
        print("FAILED: " + "; ".join(problems), file=sys.stderr)
        print(log_tail(log_path), file=sys.stderr)
    out_path = Path(args.out) if args.out else RESULTS_DIR / f"memory-{stamp}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"results: {out_path}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
