"""Hand-written baseline of the clicks job: the same work with no framework.

``python -m bench.baseline --clicks-topic T --profiles-topic T --out-topic T --dlq-topic T``
(bootstrap servers from ``--bootstrap-servers`` or ``KAFKA_BOOTSTRAP_SERVERS``).

One process, one thread, confluent-kafka + orjson:

1. read the whole profiles topic (manual ``assign`` from the beginning, to the
   end of every partition, the end confirmed for 0.5 s like the job's source),
   validate each record with ``operators.event_parsing.parse_profile`` and keep
   every valid version per user, sorted by event time (the later read wins a tie,
   as in the as-of join); then ``gc.freeze()`` (``--no-gc-freeze`` to compare);
2. read the clicks topic the same way (its consumer is assigned at start, so
   librdkafka prefetches it while profiles load), validate each click with
   ``parse_click``, look up the profile version valid at its event time
   (latest version <= click time, within ``--ttl-seconds``), encode the output
   with ``operators.join_output.encode_result`` (left join: every valid click,
   ``"profile": null`` when unmatched) and produce it keyed by user id;
3. bad records (both topics) go to the DLQ topic with
   ``operators.dead_letters.dead_letter_message`` headers;
4. the producer has the job sink's settings (idempotent, linger 5 ms, delivery
   reports for failures only); a failed delivery makes the exit status 1. It
   flushes once at the end (the job's sink flushes every write batch).

Prints one JSON line with the counts on stdout.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from bisect import bisect_right


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    p.add_argument("--clicks-topic", default="user_clicks")
    p.add_argument("--profiles-topic", default="user_profiles")
    p.add_argument("--out-topic", default="joined_data")
    p.add_argument("--dlq-topic", default="dead_letters")
    p.add_argument("--ttl-seconds", type=float, default=7 * 24 * 3600.0)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument(
        "--consumer-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra librdkafka consumer property (repeatable)",
    )
    p.add_argument("--no-gc-freeze", action="store_true")
    args = p.parse_args(argv)
    if not args.bootstrap_servers:
        p.error("--bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS is required")

    from confluent_kafka import Consumer, TopicPartition

    from bench.common import finish_producing, read_topic_batches, sink_like_producer
    from connectors.kafka_io import reader_config, require_topics
    from operators.dead_letters import dead_letter_message
    from operators.join_output import encode_result
    from operators.record_mapping import parse_click, parse_profile
    from operators.records import Click, DeadLetter, JoinResult, SourceRecord

    started = time.monotonic()
    extra_props = dict(kv.split("=", 1) for kv in args.consumer_property)
    bootstrap = args.bootstrap_servers
    ttl_ms = int(args.ttl_seconds * 1000)

    producer, failures, send = sink_like_producer(
        bootstrap, **{"batch.num.messages": "10000", "compression.type": "none"}
    )

    profiles_consumer = Consumer(reader_config(bootstrap, **extra_props))
    clicks_consumer = Consumer(reader_config(bootstrap, **extra_props))
    count = require_topics(clicks_consumer, [args.clicks_topic])[args.clicks_topic]
    clicks_consumer.assign([TopicPartition(args.clicks_topic, p, -2) for p in range(count)])

    # -- 1. profiles ----------------------------------------------------------
    raw: dict[str, list[tuple[int, int, object]]] = {}
    dead = 0
    profiles_valid = 0
    seq = 0
    topic = args.profiles_topic
    for batch in read_topic_batches(profiles_consumer, topic, batch_size=args.batch_size):
        now_ms = int(time.time() * 1000)
        for msg in batch:
            ts_type, ts = msg.timestamp()
            record = SourceRecord(
                msg.partition(),
                msg.offset(),
                msg.key(),
                msg.value(),
                None if ts_type == 0 else ts,
                msg.headers(),
            )
            parsed = parse_profile(record, topic, now_ms)
            if type(parsed) is DeadLetter:
                m = dead_letter_message(parsed, args.dlq_topic)
                send(m.topic, m.value, m.key, m.headers)
                dead += 1
                continue
            profiles_valid += 1
            seq += 1
            versions = raw.get(parsed.key)
            if versions is None:
                raw[parsed.key] = [(parsed.ts_ms, seq, parsed)]
            else:
                versions.append((parsed.ts_ms, seq, parsed))
        producer.poll(0)
    profiles_consumer.close()
    # Per user: event times (for bisect) and versions; the later read wins a tie.
    table: dict[str, tuple[list[int], list[object]]] = {}
    for user, versions in raw.items():
        versions.sort(key=lambda v: (v[0], v[1]))
        times: list[int] = []
        kept: list[object] = []
        for ts_ms, _, version in versions:
            if times and times[-1] == ts_ms:
                kept[-1] = version
            else:
                times.append(ts_ms)
                kept.append(version)
        table[user] = (times, kept)
    del raw
    gc.collect()
    if not args.no_gc_freeze:
        gc.freeze()
    profiles_done = time.monotonic()

    # -- 2. clicks ------------------------------------------------------------
    clicks_valid = matched = 0
    topic = args.clicks_topic
    out_topic = args.out_topic
    lookup = table.get
    for batch in read_topic_batches(clicks_consumer, topic, batch_size=args.batch_size, assign=False):
        now_ms = int(time.time() * 1000)
        for msg in batch:
            ts_type, ts = msg.timestamp()
            record = SourceRecord(
                msg.partition(),
                msg.offset(),
                msg.key(),
                msg.value(),
                None if ts_type == 0 else ts,
                msg.headers(),
            )
            click = parse_click(record, topic, now_ms)
            if type(click) is not Click:
                m = dead_letter_message(click, args.dlq_topic)
                send(m.topic, m.value, m.key, m.headers)
                dead += 1
                continue
            clicks_valid += 1
            profile = None
            entry = lookup(click.key)
            if entry is not None:
                i = bisect_right(entry[0], click.ts_ms) - 1
                if i >= 0 and click.ts_ms - entry[0][i] <= ttl_ms:
                    profile = entry[1][i]
                    matched += 1
            send(out_topic, encode_result(JoinResult(click, profile)), click.key.encode())
        producer.poll(0)
    clicks_consumer.close()
    return finish_producing(
        producer,
        failures,
        {
            "profiles_valid": profiles_valid,
            "users": len(table),
            "clicks_valid": clicks_valid,
            "matched": matched,
            "unmatched": clicks_valid - matched,
            "dead_letters": dead,
            "profiles_seconds": round(profiles_done - started, 3),
        },
        started,
    )


if __name__ == "__main__":
    sys.exit(main())
