"""Read a Kafka topic from its beginning to its end: print, dump as JSON, or count.

``python -m clickstream.read_topic TOPIC [--count | --json | --limit N]``

"The end" is where every partition reports partition EOF
(``enable.partition.eof``), not the high watermark: the local broker (Tansu)
reports wrong high watermarks for multi-record batches. Partitions are
assigned manually from the beginning, so no consumer group is joined and no
offsets are committed.

:func:`read_all` is the library form used by the end-to-end tests and the demo.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Tuple, Union

import orjson

Headers = List[Tuple[str, bytes]]


#: How long every partition's end must hold before reading stops.
END_CONFIRM_S = 0.3


class Record(NamedTuple):
    """One Kafka message as read."""

    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Optional[Headers]
    #: Message timestamp in epoch ms, or None when there is none.
    timestamp_ms: Optional[int]


class TopicNotFound(LookupError):
    """The topic does not exist on the cluster."""


class ReadTimeout(TimeoutError):
    """Not every partition reached its end within the time allowed."""


#: Consumer defaults; the caller's config overrides them.
CONSUMER_DEFAULTS = {
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
    "auto.offset.reset": "earliest",
    # Short broker-side wait, so EOF on idle partitions is seen quickly.
    "fetch.wait.max.ms": "10",
}


def consumer_config(bootstrap_servers_or_config: Union[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """A librdkafka consumer config from a bootstrap string or a config dict."""
    if isinstance(bootstrap_servers_or_config, str):
        given: Dict[str, Any] = {"bootstrap.servers": bootstrap_servers_or_config}
    else:
        given = dict(bootstrap_servers_or_config)
    config = {**CONSUMER_DEFAULTS, **given}
    # librdkafka's Python client insists on a group id even for assign();
    # it is never joined because we never subscribe.
    config.setdefault("group.id", f"clickstream-read-topic-{uuid.uuid4().hex[:8]}")
    config["enable.partition.eof"] = "true"
    return config


def iter_records(
    bootstrap_servers_or_config: Union[str, Mapping[str, Any]],
    topic: str,
    timeout_s: float = 30.0,
    batch_size: int = 1000,
    on_partitions: Optional[Callable[[List[int]], None]] = None,
) -> Iterator[Record]:
    """Yield every record of ``topic`` in consumption order until all partitions hit EOF.

    Raises :class:`TopicNotFound` if the topic does not exist and
    :class:`ReadTimeout` if the end is not reached within ``timeout_s``.
    Stopping the iteration early is fine (the consumer is closed).
    ``on_partitions`` is called with the topic's partition ids before reading.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    deadline = time.monotonic() + timeout_s
    consumer = Consumer(consumer_config(bootstrap_servers_or_config))
    try:
        metadata = consumer.list_topics(topic, timeout=max(0.1, min(timeout_s, 10.0)))
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            if meta is not None and meta.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise RuntimeError(f"topic {topic!r}: {meta.error}")
            raise TopicNotFound(f"topic {topic!r} does not exist")
        partitions = sorted(meta.partitions)
        if on_partitions is not None:
            on_partitions(partitions)
        pending = set(partitions)
        if not pending:
            return
        consumer.assign([TopicPartition(topic, p, -2) for p in partitions])  # -2: beginning
        last_error = None
        # The end must hold for END_CONFIRM_S: the local Tansu broker reports a
        # wrong high watermark, which librdkafka's end-of-partition event uses.
        ended_at: Optional[float] = None
        while pending or time.monotonic() - ended_at < END_CONFIRM_S:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                detail = f"; last error: {last_error}" if last_error else ""
                raise ReadTimeout(
                    f"topic {topic!r}: partitions {sorted(pending)} did not reach their "
                    f"end within {timeout_s:g} s{detail}"
                )
            for msg in consumer.consume(batch_size, min(0.1, remaining)):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                        if not pending:
                            ended_at = time.monotonic()
                    elif err.fatal():
                        raise RuntimeError(f"topic {topic!r}: {err}")
                    else:
                        last_error = err  # transient: retried until the timeout
                    continue
                if not pending:
                    # More arrived after the end: wait for its end again.
                    pending.add(msg.partition())
                ts_type, ts = msg.timestamp()
                yield Record(
                    topic, msg.partition(), msg.offset(), msg.key(), msg.value(),
                    msg.headers(), ts if ts_type != 0 else None,  # 0: no timestamp
                )
    finally:
        consumer.close()


def read_all(
    bootstrap_servers_or_config: Union[str, Mapping[str, Any]],
    topic: str,
    timeout_s: float = 30.0,
) -> List[Record]:
    """Every record of ``topic`` from the beginning to the end, sorted by (partition, offset).

    ``bootstrap_servers_or_config``: ``"host:port"`` or a librdkafka config dict
    (e.g. ``KafkaConnection.to_librdkafka()``, so SASL works).
    """
    records = list(iter_records(bootstrap_servers_or_config, topic, timeout_s))
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


def _bytes_field(name: str, data: Optional[bytes]) -> Dict[str, Any]:
    """``{name: text}`` if UTF-8, ``{name + "_b64": base64}`` otherwise, None as null."""
    if data is None:
        return {name: None}
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(data).decode("ascii")}


def record_to_json(record: Record) -> bytes:
    """One JSON line: partition, offset, key, value, headers, timestamp."""
    data: Dict[str, Any] = {"partition": record.partition, "offset": record.offset}
    data.update(_bytes_field("key", record.key))
    data.update(_bytes_field("value", record.value))
    data["headers"] = [
        {"key": name, **_bytes_field("value", value)} for name, value in (record.headers or [])
    ]
    data["timestamp"] = record.timestamp_ms
    return orjson.dumps(data)


def _show(data: Optional[bytes]) -> str:
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
        when = datetime.fromtimestamp(record.timestamp_ms / 1000, tz=timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
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
    p.add_argument("--bootstrap-servers", default=None,
                   help="default: KAFKA_BOOTSTRAP_SERVERS (other KAFKA_* librdkafka "
                   "properties, e.g. SASL, are always read from the environment)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--count", action="store_true",
                      help="only print the record count per partition and the total")
    mode.add_argument("--json", action="store_true",
                      help="one JSON object per record (bytes as UTF-8 text, else base64 "
                      "under key_b64 / value_b64)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="print only the first N records (in consumption order)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds allowed to reach the end (default 30)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: 0 ok, 1 timeout or Kafka error, 2 missing topic / bad usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must be >= 0")
    from clickstream.settings import KafkaConnection

    try:
        config = KafkaConnection.from_env(os.environ).to_librdkafka()
    except Exception as exc:  # pydantic ValidationError: bad KAFKA_* variable
        print(f"error: invalid Kafka configuration: {exc}", file=sys.stderr)
        return 2
    if args.bootstrap_servers:
        config["bootstrap.servers"] = args.bootstrap_servers

    out = sys.stdout
    per_partition: Counter = Counter()
    try:
        if args.count:
            # Start every partition at 0 so empty ones are listed too.
            def zero(partitions: List[int]) -> None:
                per_partition.update({p: 0 for p in partitions})

            for record in iter_records(config, args.topic, args.timeout, on_partitions=zero):
                per_partition[record.partition] += 1
        else:
            shown = 0
            if args.limit == 0:
                return 0
            for record in iter_records(config, args.topic, args.timeout):
                out.write((record_to_json(record).decode() if args.json
                           else format_record(record)) + "\n")
                shown += 1
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
