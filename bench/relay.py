"""Hand-written tailing join: the latency baseline of ``bench.latency``.

``python -m bench.relay --clicks-topic T --profiles-topic T --out-topic T``
(bootstrap servers from ``KAFKA_BOOTSTRAP_SERVERS``).

The least a live enrichment job must do, with no framework and no guarantees:
read the whole profiles topic into a dict, then tail the clicks topic from the
beginning in one loop (consume, ``parse_click``, as-of lookup, ``encode_result``,
``produce``), with the job's client settings (consumer ``fetch.wait.max.ms`` as the job's
unless ``--fetch-wait-ms``, producer linger 5 ms and idempotent, delivery
reports for failures only).
It does not wait for the profiles input to pass a click's time, keeps no
offsets and writes no lineage headers. It runs until SIGTERM or SIGINT, then
flushes and prints one JSON line with its counts.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from bisect import bisect_right

import orjson


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    p.add_argument("--clicks-topic", required=True)
    p.add_argument("--profiles-topic", required=True)
    p.add_argument("--out-topic", required=True)
    p.add_argument("--ttl-seconds", type=float, default=7 * 24 * 3600.0)
    p.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=None,
        help="the clicks consumer's fetch.wait.max.ms (default: librdkafka's, like the job)",
    )
    args = p.parse_args(argv)
    if not args.bootstrap_servers:
        p.error("--bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS is required")

    from confluent_kafka import Consumer, TopicPartition

    from bench.common import finish_producing, read_topic_batches, sink_like_producer
    from connectors.kafka_io import produce_with_backpressure, reader_config, require_topics
    from operators.join_output import encode_result
    from operators.record_mapping import parse_click, parse_profile
    from operators.records import Click, JoinResult, ProfileVersion, SourceRecord

    stop = False

    def on_signal(signum, frame) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    bootstrap = args.bootstrap_servers
    ttl_ms = int(args.ttl_seconds * 1000)
    producer, failures, _ = sink_like_producer(bootstrap)

    # Profiles first, to their end (the latency bench produces them before
    # any click): user -> (sorted event times, versions).
    table: dict[str, tuple[list[int], list[ProfileVersion]]] = {}
    profiles = Consumer(reader_config(bootstrap))
    for batch in read_topic_batches(profiles, args.profiles_topic):
        for msg in batch:
            record = SourceRecord(
                msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1], msg.headers()
            )
            version = parse_profile(record, args.profiles_topic, int(time.time() * 1000))
            if type(version) is ProfileVersion:
                times, kept = table.setdefault(version.key, ([], []))
                i = bisect_right(times, version.ts_ms)
                times.insert(i, version.ts_ms)
                kept.insert(i, version)
    profiles.close()

    config = reader_config(bootstrap, **{"enable.partition.eof": "false"})
    if args.fetch_wait_ms is None:
        del config["fetch.wait.max.ms"]  # librdkafka's default, like the job's sources
    else:
        config["fetch.wait.max.ms"] = str(args.fetch_wait_ms)
    clicks = Consumer(config)
    count = require_topics(clicks, [args.clicks_topic])[args.clicks_topic]
    clicks.assign([TopicPartition(args.clicks_topic, n, -2) for n in range(count)])
    print(orjson.dumps({"ready": True, "users": len(table)}).decode(), flush=True)
    relayed = bad = 0
    topic, out_topic, lookup = args.clicks_topic, args.out_topic, table.get
    while not stop:
        for msg in clicks.consume(1000, 0.005):
            if msg.error() is not None:
                continue
            record = SourceRecord(
                msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1], msg.headers()
            )
            click = parse_click(record, topic, int(time.time() * 1000))
            if type(click) is not Click:
                bad += 1
                continue
            profile = None
            entry = lookup(click.key)
            if entry is not None:
                i = bisect_right(entry[0], click.ts_ms) - 1
                if i >= 0 and click.ts_ms - entry[0][i] <= ttl_ms:
                    profile = entry[1][i]
            value = encode_result(JoinResult(click, profile))
            try:
                producer.produce(out_topic, value, click.key.encode())
            except BufferError:
                produce_with_backpressure(producer, out_topic, value, click.key.encode(), poll_s=0.01)
            relayed += 1
        producer.poll(0)
    clicks.close()
    return finish_producing(producer, failures, {"relayed": relayed, "bad": bad}, flush_timeout_s=30)


if __name__ == "__main__":
    sys.exit(main())
