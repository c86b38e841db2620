"""The benchmark workload in another record shape, for the nested-mapping run.

Clicks ``{"user_id": 42, "ts": <ms or ISO>, ...}`` become
``{"user": {"id": 42}, "event_time": <epoch seconds, float>, ...}`` and
profiles ``{"user_id": 42, "updated_at": ...}`` become
``{"user": {"id": 42}, "updated_at": ...}``; partition, key, timestamp and
headers are kept, and so is every bad record's badness (an unparseable time
stays unparseable, a missing id stays missing). The job then runs with
:data:`NESTED_MAPPING` and must produce the same counts as on the original.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from bench.common import read_topic_batches
from connectors.kafka_io import produce_with_backpressure, reader_config

NESTED_MAPPING = {
    "CLICKS_KEY": "user.id",
    "CLICKS_TIME": "event_time",
    "CLICKS_TIME_FORMAT": "epoch_s",
    "PROFILES_KEY": "user.id",
}


def _seconds(ts: Any) -> Any:
    """Epoch seconds of a valid ms/ISO time; anything else unchanged (stays bad)."""
    if type(ts) is int:
        return ts / 1000
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            return ts
        if parsed.tzinfo is not None:
            return round(parsed.timestamp() * 1000) / 1000
    return ts


def reshape(value: bytes | None, time_field: str | None) -> bytes | None:
    """One record in the nested shape; ``time_field``: the clicks' time to move
    to ``event_time`` in seconds (None for profiles: the time stays as it is)."""
    try:
        obj = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return value
    if type(obj) is not dict or "user_id" not in obj:
        return value
    out: dict[str, Any] = {"user": {"id": obj.pop("user_id")}}
    if time_field is not None and time_field in obj:
        out["event_time"] = _seconds(obj.pop(time_field))
    out.update(obj)
    return orjson.dumps(out)


def copy_nested(bootstrap: str, source: str, target: str, time_field: str | None) -> int:
    """Copy ``source`` (read to its confirmed end) into ``target`` reshaped,
    partition by partition; returns the number of records copied."""
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(reader_config(bootstrap))
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 500_000}
    )
    failures = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            failures.append(err)

    n = 0
    try:
        for batch in read_topic_batches(consumer, source, batch_size=5000):
            for msg in batch:
                kind, ts = msg.timestamp()
                produce_with_backpressure(
                    producer,
                    target,
                    reshape(msg.value(), time_field),
                    msg.key(),
                    partition=msg.partition(),
                    headers=msg.headers(),
                    timestamp=ts if kind else 0,
                    on_delivery=on_delivery,
                )
                n += 1
            producer.poll(0)
        if producer.flush(300) or failures:
            raise SystemExit(f"bench: nested copy of {source} not delivered: {failures[:3]}")
    finally:
        consumer.close()
    return n
