"""Read a Kafka topic from its beginning to its end: print, dump as JSON, or count.

``python -m clickstream.read_topic TOPIC [--count | --json | --limit N]``

"The end" is where every partition reports partition EOF and the end then
holds (:func:`connectors.kafka_io.read_to_end`), not the high watermark: the
local broker (Tansu) reports wrong high watermarks for multi-record batches.
Partitions are assigned manually from the beginning, so no consumer group is
joined and no offsets are committed.

:func:`read_all` is the library form used by the end-to-end tests and the demo.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from connectors.kafka_io import (
    NO_TIMESTAMP,
    ReadTimeout,
    TopicNotFound,
    read_to_end,
    reader_config,
    require_topics,
)

__all__ = ["ReadTimeout", "Record", "TopicNotFound", "iter_records", "main", "read_all"]

Headers = list[tuple[str, bytes]]


class Record(NamedTuple):
    """One Kafka message as read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    #: Message timestamp in epoch ms, or None when there is none.
    timestamp_ms: int | None


def iter_records(
    bootstrap_servers_or_config: str | Mapping[str, Any],
    topic: str,
    timeout_s: float = 30.0,
    batch_size: int = 1000,
    on_partitions: Callable[[list[int]], None] | None = None,
) -> Iterator[Record]:
    """Yield every record of ``topic`` in consumption order until all partitions'
    end is confirmed (:func:`connectors.kafka_io.read_to_end`).

    Raises :class:`TopicNotFound` if the topic does not exist and
    :class:`ReadTimeout` if the end is not reached within ``timeout_s``.
    Stopping the iteration early is fine (the consumer is closed).
    ``on_partitions`` is called with the topic's partition ids before reading.
    """
    from confluent_kafka import Consumer

    deadline = time.monotonic() + timeout_s
    count = require_topics(bootstrap_servers_or_config, [topic], timeout_s=max(0.1, min(timeout_s, 10.0)))[
        topic
    ]
    partitions = list(range(count))
    if on_partitions is not None:
        on_partitions(partitions)
    consumer = Consumer(reader_config(bootstrap_servers_or_config))
    try:
        for batch in read_to_end(
            consumer,
            topic,
            partitions,
            batch_size=batch_size,
            timeout_s=max(0.0, deadline - time.monotonic()),
        ):
            for msg in batch:
                ts_type, ts = msg.timestamp()
                yield Record(
                    topic,
                    msg.partition(),
                    msg.offset(),
                    msg.key(),
                    msg.value(),
                    msg.headers(),
                    ts if ts_type != NO_TIMESTAMP else None,
                )
    finally:
        consumer.close()


def read_all(
    bootstrap_servers_or_config: str | Mapping[str, Any],
    topic: str,
    timeout_s: float = 30.0,
) -> list[Record]:
    """Every record of ``topic`` from the beginning to the end, sorted by (partition, offset).

    ``bootstrap_servers_or_config``: ``"host:port"`` or a librdkafka config dict
    (e.g. ``KafkaConnection.to_librdkafka()``, so SASL works).
    """
    records = list(iter_records(bootstrap_servers_or_config, topic, timeout_s))
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


def _bytes_field(name: str, data: bytes | None) -> dict[str, Any]:
    """``{name: text}`` if UTF-8, ``{name + "_b64": base64}`` otherwise, None as null."""
    if data is None:
        return {name: None}
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(data).decode("ascii")}


def record_to_json(record: Record) -> bytes:
    """One JSON line: partition, offset, key, value, headers, timestamp."""
    data: dict[str, Any] = {"partition": record.partition, "offset": record.offset}
    data.update(_bytes_field("key", record.key))
    data.update(_bytes_field("value", record.value))
    data["headers"] = [
        {"key": name, **_bytes_field("value", value)} for name, value in (record.headers or [])
    ]
    data["timestamp"] = record.timestamp_ms
    return orjson.dumps(data)


def _show(data: bytes | None) -> str:
    if data is None:
        return "null"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "b64:" + base64.b64encode(data).decode("ascii")


def format_record(record: Record) -> str:
    """``p0@12 2026-01-01T00:00:00.000Z key=u00001 {"user_id": ...}``."""
    if record.timestamp_ms is None:
        when = "-"
    else:
        when = (
            datetime.fromtimestamp(record.timestamp_ms / 1000, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
    line = f"p{record.partition}@{record.offset} {when} key={_show(record.key)} {_show(record.value)}"
    if record.headers:
        line += " headers=" + ",".join(f"{k}={_show(v)}" for k, v in record.headers)
    return line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clickstream-read-topic",
        description="Read a topic from the beginning to the end of every partition.",
    )
    p.add_argument("topic")
    p.add_argument(
        "--bootstrap-servers",
        default=None,
        help="default: KAFKA_BOOTSTRAP_SERVERS (other KAFKA_* librdkafka "
        "properties, e.g. SASL, are always read from the environment)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--count", action="store_true", help="only print the record count per partition and the total"
    )
    mode.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per record (bytes as UTF-8 text, else base64 under key_b64 / value_b64)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="print only the first N records (in consumption order)",
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds allowed to reach the end (default 30)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 ok, 1 timeout or Kafka error, 2 missing topic / bad usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must be >= 0")
    from clickstream.tooling import UsageError, kafka_config

    try:
        config = kafka_config(args.bootstrap_servers, os.environ)
    except UsageError as exc:  # a bad KAFKA_* variable (its value never shown)
        print(f"error: {exc}", file=sys.stderr)
        return 2

    out = sys.stdout
    per_partition: Counter = Counter()
    try:
        if args.count:
            # Start every partition at 0 so empty ones are listed too.
            def zero(partitions: list[int]) -> None:
                per_partition.update({p: 0 for p in partitions})

            for record in iter_records(config, args.topic, args.timeout, on_partitions=zero):
                per_partition[record.partition] += 1
        else:
            if args.limit == 0:
                return 0
            for shown, record in enumerate(iter_records(config, args.topic, args.timeout), 1):
                out.write((record_to_json(record).decode() if args.json else format_record(record)) + "\n")
                if args.limit is not None and shown >= args.limit:
                    break
            out.flush()
            return 0
    except TopicNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ReadTimeout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # KafkaException: unreachable broker, auth failure
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for partition in sorted(per_partition):
        out.write(f"partition {partition}: {per_partition[partition]}\n")
    out.write(f"total: {sum(per_partition.values())}\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
