"""The measuring side of :mod:`bench.latency`: the consumer (run in its own
process) that times every joined record, and the latency statistics."""

from __future__ import annotations

import time
from typing import Any

import orjson


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def stats(values: list[float]) -> dict[str, Any]:
    s = sorted(values)
    return {
        "count": len(s),
        "p50_ms": _r(percentile(s, 50)),
        "p95_ms": _r(percentile(s, 95)),
        "p99_ms": _r(percentile(s, 99)),
        "max_ms": _r(s[-1] if s else None),
        "mean_ms": _r(sum(s) / len(s) if s else None),
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


# -- the measuring consumer (own process) -----------------------------------
def consume_joined(
    bootstrap: str,
    topic: str,
    partitions: int,
    conn,
    stop_event,
    first_event,
    counter,
    fetch_wait_ms: int = 5,
) -> None:
    """Read ``topic`` and send back [(sent_at_ms, latency_ms, matched, probe, in_job_ms)] when told to stop.

    ``in_job_ms`` is the joined record's Kafka timestamp (set by the job's
    producer when the sink called ``produce()``) minus ``sent_at_ms``: the part
    of the latency up to the job's sink; the rest is the sink's send, the broker
    and this consumer's fetch.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-latency",  # never joined: assign() only
            "enable.auto.commit": "false",
            "fetch.wait.max.ms": str(fetch_wait_ms),
            "fetch.error.backoff.ms": "5",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    samples: list[tuple] = []
    seen = set()
    duplicates = 0
    marker = b',"profile":null,'
    try:
        while not stop_event.is_set():
            for msg in consumer.consume(1000, 0.05):
                now_ms = time.time() * 1000
                if msg.error() is not None:
                    continue
                value = msg.value()
                click = orjson.loads(value)["click"]
                sent = click.get("sent_at_ms")
                if sent is None:
                    continue
                n = click.get("n")
                if n in seen:
                    duplicates += 1
                    continue
                seen.add(n)
                probe = bool(click.get("probe"))
                if probe:
                    first_event.set()
                samples.append((sent, now_ms - sent, marker not in value, probe, msg.timestamp()[1] - sent))
            counter.value = len(seen)
    finally:
        consumer.close()
    conn.send((samples, duplicates))
    conn.close()
