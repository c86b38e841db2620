"""End-to-end latency of the clicks job while tailing, at a steady click rate.

``python -m bench.latency`` (default 10,000 clicks/s for 60 s; shorter:
``--rate 2000 --duration 15``). It

1. starts the local broker, creates the topics and produces one profile per
   user (``--users``, ``updated_at`` an hour ago) before anything else;
2. starts ``python -m bytewax.run dataflows.clicks`` with ``KAFKA_TAIL=true``
   (``--strategy``, and any ``--job-env KEY=VALUE``);
3. waits until the job is caught up: probe clicks are produced every 0.5 s
   until one comes out on the joined topic;
4. produces clicks at ``--rate`` for ``--duration`` seconds: each click's
   ``ts`` is the produce time in epoch ms and ``sent_at_ms`` the wall time (ms,
   fractional) taken right before ``produce()``;
5. a consumer in its own process reads the joined topic and records, per
   record, the wall time it was consumed minus ``sent_at_ms``: that is the
   end-to-end latency (producer batching, broker, the job's source poll, the
   join's wait for the profiles watermark, the sink, the consumer's fetch);
6. prints p50/p95/p99/max (clicks sent during the first ``--warmup`` seconds
   excluded; all samples also shown), a per-10-s timeline, the achieved rates,
   the job's CPU use and peak RSS, and writes ``bench/results/latency-<ts>.json``.

Every click must come out exactly once, matched with its user's profile:
otherwise the run is FAILED (exit status 1).
"""

from __future__ import annotations

import multiprocessing
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    RESULTS_DIR,
    TreeSampler,
    bytewax_cmd,
    code_identity,
    job_env,
    log_tail,
    machine_info,
    process_cpu_seconds,
    resolve_code_dir,
    system_busy_cpu,
    timestamp,
)
from bench.latency_cli import build_parser, print_phase
from bench.latency_reader import consume_joined, stats

TOPICS = {"lat_clicks": 4, "lat_profiles": 2, "lat_joined": 4, "lat_unmatched": 1, "lat_dlq": 1}


def run_phase(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    bootstrap: str,
    topics: dict[str, str],
    users: list[str],
    args,
    log_path: Path,
) -> dict[str, Any]:
    """Start ``cmd``, wait until it is caught up, send clicks at ``args.rate``
    for ``args.duration`` s, drain, stop it; the phase's results."""
    from confluent_kafka import Producer

    from connectors.kafka_io import produce_with_backpressure

    ctx = multiprocessing.get_context("spawn")
    problems: list[str] = []
    log_fh = open(log_path, "wb")  # noqa: SIM115 - the job writes it until the phase ends
    job = subprocess.Popen(cmd, env=env, stdout=log_fh, stderr=subprocess.STDOUT, start_new_session=True)
    sampler = TreeSampler([job.pid], interval_s=0.5)
    sampler.start()

    parent_conn, child_conn = ctx.Pipe(duplex=False)
    stop_event = ctx.Event()
    first_event = ctx.Event()
    counter = ctx.Value("q", 0, lock=False)
    reader = ctx.Process(
        target=consume_joined,
        args=(
            bootstrap,
            topics["joined"],
            TOPICS["lat_joined"],
            child_conn,
            stop_event,
            first_event,
            counter,
            args.reader_fetch_wait_ms,
        ),
    )
    reader.start()

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": str(args.linger_ms),
            "enable.idempotence": "true",
            "queue.buffering.max.messages": "1000000",
        }
    )
    rng = random.Random(11)
    n = 0

    def send(probe: bool = False) -> None:
        nonlocal n
        user = rng.choice(users)
        sent = time.time() * 1000
        body = {
            "user_id": user,
            "ts": int(sent),
            "sent_at_ms": round(sent, 3),
            "n": n,
            "page": f"/products/{rng.randint(1, 500)}",
            "action": "view",
        }
        if probe:
            body["probe"] = True
        n += 1
        produce_with_backpressure(producer, topics["clicks"], orjson.dumps(body), user.encode(), poll_s=0.01)

    # -- wait until the job is caught up --------------------------------------
    t0 = time.monotonic()
    probes = 0
    while not first_event.is_set():
        if job.poll() is not None:
            break
        if time.monotonic() - t0 > 120:
            problems.append("not caught up within 120 s")
            break
        send(probe=True)
        probes += 1
        producer.flush(5)
        first_event.wait(0.5)
    ready_s = time.monotonic() - t0
    print(f"{name}: caught up after {ready_s:.1f} s ({probes} probe clicks)", flush=True)
    time.sleep(1.0)  # let the last probes drain

    # -- steady clicks --------------------------------------------------------
    cpu_before = sampler.sample_once()
    busy_before = system_busy_cpu()
    broker_before = process_cpu_seconds(BROKER_PID[0])
    started = time.monotonic()
    total = int(args.rate * args.duration)
    sent_count = 0
    if not problems:
        while sent_count < total:
            due = min(total, int((time.monotonic() - started) * args.rate) + 1)
            while sent_count < due:
                send()
                sent_count += 1
            producer.poll(0)
            if sent_count >= due:
                ahead = sent_count / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(min(ahead, 0.002))
        producer.flush(30)
    produce_s = time.monotonic() - started
    cpu_after = sampler.sample_once()
    busy_s = system_busy_cpu() - busy_before
    broker_s = process_cpu_seconds(BROKER_PID[0]) - broker_before

    # -- drain ----------------------------------------------------------------
    expected = n  # probes included
    deadline = time.monotonic() + args.drain_timeout
    while counter.value < expected and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # anything more (a duplicate) would show up now
    stop_event.set()
    samples, duplicates = parent_conn.recv()
    reader.join(timeout=10)
    sampler.stop()
    job_alive = job.poll() is None
    if job_alive:
        job.send_signal(signal.SIGINT)
        try:
            job.wait(timeout=10)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()
    log_fh.close()

    steady = [s for s in samples if not s[3]]
    received = len(steady)
    unmatched = sum(1 for s in steady if not s[2])
    t_first = min((s[0] for s in steady), default=0)
    warm = [s for s in steady if s[0] - t_first >= args.warmup * 1000]
    if not job_alive:
        problems.append(f"exited early with status {job.returncode}")
    if received != sent_count:
        problems.append(f"received {received:,} of {sent_count:,} clicks")
    if duplicates:
        problems.append(f"{duplicates} duplicate records")
    if unmatched:
        problems.append(f"{unmatched} clicks without their profile")

    timeline = []
    bucket_s = max(1, round(args.duration / 12))
    for b in range(int(args.duration // bucket_s) + 1):
        lo = t_first + b * bucket_s * 1000
        vals = [s[1] for s in steady if lo <= s[0] < lo + bucket_s * 1000]
        if vals:
            timeline.append({"from_s": b * bucket_s, **stats(vals)})
    job_cpu = None
    if cpu_before and cpu_after:
        job_cpu = round((cpu_after[1] - cpu_before[1]) / produce_s, 3)
    return {
        "name": name,
        "status": "ok" if not problems else "FAILED",
        "problems": problems,
        "clicks_sent": sent_count,
        "clicks_received": received,
        "achieved_produce_rate": round(sent_count / produce_s, 1) if produce_s else None,
        "caught_up_after_s": round(ready_s, 2),
        "cpu_utilisation": job_cpu,
        "broker_cpu_utilisation": round(broker_s / produce_s, 3) if produce_s else None,
        "machine_busy_cores": round(busy_s / produce_s, 3) if produce_s else None,
        "peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
        "latency_after_warmup": stats([s[1] for s in warm]),
        "latency_all": stats([s[1] for s in steady]),
        "up_to_sink_after_warmup": stats([s[4] for s in warm]),
        "sink_to_consumer_after_warmup": stats([s[1] - s[4] for s in warm]),
        "timeline": timeline,
        "timeline_bucket_s": bucket_s,
        "log": str(log_path),
    }


BROKER_PID = [0]


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__.split("\n")[0]).parse_args(argv)

    from clickstream.broker import LocalBroker
    from clickstream.generate import GenerateOptions, produce
    from operators.event_parsing import format_event_time

    code_dir = resolve_code_dir(args.code)
    code_at_start = code_identity(code_dir)
    stamp = timestamp()
    extra_env = dict(kv.split("=", 1) for kv in args.job_env)
    phases: list[dict[str, Any]] = []
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)

    with LocalBroker.start() as broker:
        bootstrap = broker.bootstrap_servers
        BROKER_PID[0] = broker.process.pid
        plan = [] if args.no_baseline else ["relay"]
        plan.append("job")
        topic_sets = {}
        for name in plan:
            prefix = "lat_" if name == "job" else "rel_"
            topic_sets[name] = {
                "clicks": prefix + "clicks",
                "profiles": prefix + "profiles",
                "joined": prefix + "joined",
                "unmatched": prefix + "unmatched",
                "dlq": prefix + "dlq",
            }
            broker.create_topics({prefix + k[len("lat_") :]: v for k, v in TOPICS.items()})
        now_ms = int(time.time() * 1000)
        for name in plan:
            options = GenerateOptions(
                users=args.users,
                clicks=0,
                versions_per_user=1,
                start=format_event_time(now_ms - 3_600_000),
                seed=7,
            )
            report = produce(
                options,
                {"bootstrap.servers": bootstrap},
                topic_sets[name]["profiles"],
                topic_sets[name]["clicks"],
            )
            print(f"{name}: {report.profiles_produced:,} profiles produced", flush=True)
        width = max(5, len(str(2 * args.users)))
        users = [f"u{n:0{width}d}" for n in range(1, args.users + 1)]

        for name in plan:
            t = topic_sets[name]
            if name == "relay":
                env = job_env(code_dir, bootstrap)
                cmd = [
                    sys.executable,
                    "-m",
                    "bench.relay",
                    "--clicks-topic",
                    t["clicks"],
                    "--profiles-topic",
                    t["profiles"],
                    "--out-topic",
                    t["joined"],
                ]
                if "KAFKA_FETCH_WAIT_MAX_MS" in extra_env:  # same client settings as the job
                    cmd += ["--fetch-wait-ms", extra_env["KAFKA_FETCH_WAIT_MAX_MS"]]
            else:
                env = job_env(
                    code_dir,
                    bootstrap,
                    {
                        "CLICKS_TOPIC": t["clicks"],
                        "PROFILES_TOPIC": t["profiles"],
                        "JOINED_TOPIC": t["joined"],
                        "UNMATCHED_TOPIC": t["unmatched"],
                        "DLQ_TOPIC": t["dlq"],
                        "KAFKA_TAIL": "true",
                        "JOIN_STRATEGY": args.strategy,
                        **extra_env,
                    },
                )
                cmd = bytewax_cmd("clicks")
            phases.append(
                run_phase(
                    name, cmd, env, bootstrap, t, users, args, RESULTS_DIR / f"latency-{stamp}-{name}.log"
                )
            )

    problems = [f"{r['name']}: {problem}" for r in phases for problem in r["problems"]]
    job = phases[-1]
    result = {
        "timestamp": stamp,
        "command": [sys.executable, "-m", "bench.latency", *(argv if argv is not None else sys.argv[1:])],
        "machine": machine_info(),
        "code": code_at_start,
        "status": "ok" if not problems else "FAILED",
        "problems": problems,
        "rate_target": args.rate,
        "duration_s": args.duration,
        "strategy": args.strategy,
        "job_env": extra_env,
        "phases": phases,
        # The job's figures at the top level, as before the relay baseline.
        **{
            k: job[k]
            for k in (
                "clicks_sent",
                "clicks_received",
                "achieved_produce_rate",
                "latency_after_warmup",
                "latency_all",
                "up_to_sink_after_warmup",
                "sink_to_consumer_after_warmup",
                "timeline",
            )
        },
    }
    print()
    print(
        f"strategy {args.strategy}, {args.users:,} users, target {args.rate:,.0f} clicks/s for "
        f"{args.duration:g} s" + (f", job env {extra_env}" if extra_env else "")
    )
    for r in phases:
        print_phase(r)
    p99 = job["latency_after_warmup"]["p99_ms"]
    if len(phases) == 2 and p99 is not None and phases[0]["latency_after_warmup"]["p99_ms"]:
        base = phases[0]["latency_after_warmup"]
        print(
            f"job vs hand-written relay: p50 {job['latency_after_warmup']['p50_ms']} vs {base['p50_ms']} ms, "
            f"p99 {p99} vs {base['p99_ms']} ms ({p99 / base['p99_ms']:.2f}x)"
        )
    if p99 is not None:
        verdict = "met" if (p99 < 100 and not problems) else "MISSED"
        print(f"target p99 < 100 ms at {args.rate:,.0f}/s: {verdict}")
    if problems:
        print("FAILED: " + "; ".join(problems), file=sys.stderr)
        for r in phases:
            if r["problems"]:
                print(log_tail(Path(r["log"])), file=sys.stderr)
    out_path = Path(args.out) if args.out else RESULTS_DIR / f"latency-{stamp}.json"
    out_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"results: {out_path}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
