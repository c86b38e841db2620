"""Hand-written baseline of the top_users job: count clicks per user per window.

``python -m bench.baseline_top --clicks-topic T --top-topic T --late-topic T --dlq-topic T``

One process, one thread, confluent-kafka + orjson, the job's rules:

* read the clicks topic (manual ``assign`` from the beginning, end confirmed
  for 0.5 s; larger fetches than librdkafka's defaults:
  ``max.partition.fetch.bytes`` 8 MiB, ``queued.min.messages`` 1M, else the
  loop waits on fetches), validate with ``operators.event_parsing.parse_click``;
* tumbling windows of ``--window-seconds`` aligned to the epoch; the watermark
  is the minimum over the partitions of (largest event time read - 1 ms); a
  window closes when the watermark passes its end plus ``--lateness-seconds``
  and is emitted once: key = window start, value =
  ``{"window_start", "window_end", "top": [{"user_id", "clicks"}, ...]}``,
  top ``--top-n`` by clicks descending then user id ascending (byte-identical to
  the job's messages); at the end of input every open window is emitted;
* a click whose window has closed goes to the late topic, bad records to the
  DLQ topic (same headers as the job).

Prints one JSON line: counts and ``digest``, a SHA-256 over the sorted window
messages, which ``bench.run`` compares with the job's output.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import os
import sys
import time

import orjson

END_OF_TIME_MS = 2**62


def windows_digest(values: list[bytes]) -> str:
    h = hashlib.sha256()
    for value in sorted(values):
        h.update(value)
        h.update(b"\n")
    return h.hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baseline_top", description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    p.add_argument("--clicks-topic", default="user_clicks")
    p.add_argument("--top-topic", default="top_users")
    p.add_argument("--late-topic", default="late_clicks")
    p.add_argument("--dlq-topic", default="dead_letters")
    p.add_argument("--window-seconds", type=float, default=1800.0)
    p.add_argument("--lateness-seconds", type=float, default=60.0)
    p.add_argument("--top-n", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument(
        "--consumer-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra librdkafka consumer property (repeatable)",
    )
    args = p.parse_args(argv)
    if not args.bootstrap_servers:
        p.error("--bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS is required")

    from confluent_kafka import Consumer

    from bench.common import finish_producing, read_topic_batches, sink_like_producer
    from connectors.kafka_io import reader_config, require_topics
    from operators.dead_letters import dead_letter_message
    from operators.event_parsing import format_event_time
    from operators.record_mapping import parse_click
    from operators.records import Click, SourceRecord

    started = time.monotonic()
    # Counting is cheap, so this loop is fetch-bound with librdkafka's defaults
    # (~105k/s at 1M clicks, CPU/wall 0.6); larger fetches make it CPU-bound
    # (~220k/s). The join baseline is CPU-bound already and got slower with them.
    extra_props = {"max.partition.fetch.bytes": str(8 * 1024 * 1024), "queued.min.messages": "1000000"}
    extra_props.update(kv.split("=", 1) for kv in args.consumer_property)
    producer, failures, send = sink_like_producer(args.bootstrap_servers, **{"compression.type": "none"})

    window_ms = int(args.window_seconds * 1000)
    lateness_ms = int(args.lateness_seconds * 1000)
    top_n = args.top_n
    counts: dict[int, dict[str, int]] = {}
    closed_ms = -(2**62)
    emitted: list[bytes] = []

    def close(watermark: int) -> None:
        nonlocal closed_ms
        if watermark >= END_OF_TIME_MS:
            through = END_OF_TIME_MS
        else:
            limit = watermark - lateness_ms
            through = limit - limit % window_ms
        if through <= closed_ms:
            return
        closed_ms = through
        for start in sorted(s for s in counts if s + window_ms <= through):
            users = counts.pop(start)
            top = heapq.nsmallest(top_n, users.items(), key=lambda kv: (-kv[1], kv[0]))
            key = format_event_time(start)
            value = orjson.dumps(
                {
                    "window_start": key,
                    "window_end": format_event_time(start + window_ms),
                    "top": [{"user_id": u, "clicks": c} for u, c in top],
                }
            )
            emitted.append(value)
            send(args.top_topic, value, key.encode())

    consumer = Consumer(reader_config(args.bootstrap_servers, **extra_props))
    topic = args.clicks_topic
    partition_count = require_topics(consumer, [topic])[topic]
    partition_wm: dict[int, int] = {}
    clicks_valid = late = dead = 0
    for batch in read_topic_batches(consumer, topic, batch_size=args.batch_size):
        now_ms = int(time.time() * 1000)
        batch_max: dict[int, int] = {}
        for msg in batch:
            ts_type, ts = msg.timestamp()
            partition = msg.partition()
            record = SourceRecord(
                partition, msg.offset(), msg.key(), msg.value(), None if ts_type == 0 else ts, msg.headers()
            )
            click = parse_click(record, topic, now_ms)
            if type(click) is not Click:
                m = dead_letter_message(click, args.dlq_topic)
                send(m.topic, m.value, m.key, m.headers)
                dead += 1
                continue
            clicks_valid += 1
            ts_ms = click.ts_ms
            if ts_ms > batch_max.get(partition, -(2**62)):
                batch_max[partition] = ts_ms
            start = ts_ms - ts_ms % window_ms
            if start + window_ms <= closed_ms:
                late += 1
                headers = [
                    ("late.window_start", format_event_time(start).encode()),
                    ("late.window_end", format_event_time(start + window_ms).encode()),
                    ("late.watermark", format_event_time(min(partition_wm.values(), default=0)).encode()),
                    ("late.event_time", format_event_time(ts_ms).encode()),
                    ("late.topic", topic.encode()),
                    ("late.partition", str(partition).encode()),
                    ("late.offset", str(click.offset).encode()),
                ]
                send(args.late_topic, click.value, click.key, headers)
                continue
            users = counts.get(start)
            if users is None:
                users = counts[start] = {}
            users[click.key] = users.get(click.key, 0) + 1
        for partition, ts_ms in batch_max.items():
            if ts_ms - 1 > partition_wm.get(partition, -(2**62)):
                partition_wm[partition] = ts_ms - 1
        if len(partition_wm) == partition_count:
            close(min(partition_wm.values()))
        producer.poll(0)
    consumer.close()
    close(END_OF_TIME_MS)
    return finish_producing(
        producer,
        failures,
        {
            "clicks_valid": clicks_valid,
            "windows": len(emitted),
            "late": late,
            "dead_letters": dead,
            "digest": windows_digest(emitted),
        },
        started,
    )


if __name__ == "__main__":
    sys.exit(main())
