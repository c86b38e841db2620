"""Kafka plumbing shared by the connectors and every tool: one place for it.

* :func:`require_topics` / :func:`missing_topics`: partition counts from a
  metadata lookup that never creates a topic (``allow.auto.create.topics`` is
  off: a default-configured admin or producer client makes the local broker
  create any topic it is asked about);
* :func:`read_to_end`: read partitions from an offset to their *confirmed*
  end: every partition reports end-of-partition and the end then holds for
  :data:`END_HOLD_S` (the local Tansu broker reports a wrong high watermark
  for multi-record batches, and librdkafka's end-of-partition event relies
  on it);
* :func:`produce_with_backpressure` / :func:`produce_all`: produce, serving
  delivery reports while librdkafka's local queue is full (``BufferError``);
  :func:`produce_all` raises :class:`DeliveryFailed` for failed deliveries;
* :data:`PRODUCER_DEFAULTS` and :func:`reader_config`: client defaults.

Hot paths (the sink's per-message produce, the source's poll loop) call
``produce`` / ``consume`` themselves and come here only on the slow paths:
``except BufferError: produce_with_backpressure(...)``, the read-back, the
end-hold constant. This module depends on confluent-kafka only.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from connectors.client_logs import with_client_logs

#: How long the end of every partition must hold (no new record) before a
#: reader counts as finished: the reads to the end here, and the job's source
#: with ``KAFKA_TAIL=false``. Under load, the local broker's end-of-partition
#: event was seen to fire before every acknowledged record was readable.
END_HOLD_S = 0.5

#: librdkafka: "this message has no timestamp" (``TIMESTAMP_NOT_AVAILABLE``).
NO_TIMESTAMP = 0

#: Producer defaults of the tools (generator, DLQ replay); the caller's config
#: (``KAFKA_*`` properties) overrides them.
PRODUCER_DEFAULTS: dict[str, str] = {
    # Keeps each partition's order through retries (profiles must stay in order).
    "enable.idempotence": "true",
    "linger.ms": "20",
    "batch.num.messages": "10000",
    "queue.buffering.max.messages": "500000",
}

#: Defaults of a reader (manual ``assign``, no group joined, no commits); the
#: caller's config overrides them.
READER_DEFAULTS: dict[str, str] = {
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
    "auto.offset.reset": "earliest",
    "allow.auto.create.topics": "false",
    # Short broker-side wait, so the end of idle partitions is seen quickly.
    "fetch.wait.max.ms": "10",
}

Config = str | Mapping[str, Any]


class TopicNotFound(LookupError):
    """A topic does not exist on the cluster (``topics``: the missing ones)."""

    def __init__(self, topics: Sequence[str]):
        self.topics = list(topics)
        super().__init__("; ".join(f"topic {t!r} does not exist" for t in self.topics))


class KafkaIOError(RuntimeError):
    """Kafka could not be read (broker unreachable, fatal or topic-level error)."""


class ReadTimeout(TimeoutError):
    """Not every partition reached its end within the time allowed."""


class DeliveryFailed(RuntimeError):
    """Messages were not delivered (rejected by the broker, or not within the flush timeout)."""


def _as_config(config: Config) -> dict[str, Any]:
    if isinstance(config, str):
        return {"bootstrap.servers": config}
    return dict(config)


def reader_config(config: Config, **overrides: Any) -> dict[str, Any]:
    """A consumer config for :func:`read_to_end` from ``"host:port"`` or a
    librdkafka config dict: :data:`READER_DEFAULTS`, then ``config``, then
    ``overrides`` (as ``**{"fetch.wait.max.ms": "50"}``). ``enable.partition.eof``
    is on unless ``overrides`` turn it off (a tailing consumer)."""
    merged: dict[str, Any] = {**READER_DEFAULTS, **_as_config(config)}
    # librdkafka's Python client insists on a group id even for assign();
    # it is never joined because nothing subscribes.
    merged.setdefault("group.id", f"clickstream-reader-{uuid.uuid4().hex[:8]}")
    merged["enable.partition.eof"] = "true"  # read_to_end needs it
    merged.update(overrides)
    return merged


def partition_counts(
    config_or_reader: Any, topics: Iterable[str], timeout_s: float = 10.0
) -> dict[str, int | None]:
    """``{topic: partition count}``, None for a topic that does not exist.

    ``config_or_reader``: ``"host:port"``, a librdkafka config dict, or a
    consumer made with :func:`reader_config`. Each topic is asked about with
    ``allow.auto.create.topics=false``, so the lookup never creates one.
    Raises :class:`KafkaIOError` when the cluster cannot be asked or reports
    another error for a topic.
    """
    where: str | None
    serve_logs: Callable[[float], Any] | None = None
    if hasattr(config_or_reader, "list_topics"):
        admin, where = config_or_reader, "the cluster"
    else:
        from confluent_kafka.admin import AdminClient

        config = _as_config(config_or_reader)
        where = config.get("bootstrap.servers")
        admin = AdminClient(with_client_logs({**config, "allow.auto.create.topics": "false"}))
        serve_logs = admin.poll
    counts: dict[str, int | None] = {}
    for topic in dict.fromkeys(topics):
        try:
            meta = _topic_metadata(admin, topic, timeout_s, serve_logs)
        except Exception as exc:  # KafkaException: broker unreachable, auth failure
            raise KafkaIOError(f"cannot list partitions of topic {topic!r} at {where}: {exc}") from exc
        if meta is None or (meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            counts[topic] = None
        elif meta.error is not None:
            raise KafkaIOError(f"topic {topic!r} is not usable at {where}: {meta.error.str()}")
        elif not meta.partitions:
            raise KafkaIOError(f"topic {topic!r} is not usable at {where}: no partitions")
        else:
            counts[topic] = len(meta.partitions)
    return counts


def _topic_metadata(
    admin: Any, topic: str, timeout_s: float, serve_logs: Callable[[float], Any] | None
) -> Any:
    """``topic``'s metadata (None if unknown). With ``serve_logs`` (our own admin
    client), ask in 1 s slices and serve the client's log lines in between, so an
    unreachable broker is reported at once (see :mod:`connectors.client_logs`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        slice_s = remaining if serve_logs is None else min(1.0, remaining)
        try:
            return admin.list_topics(topic, timeout=max(slice_s, 0.001)).topics.get(topic)
        except KafkaException:
            if serve_logs is None or time.monotonic() >= deadline:
                raise
            serve_logs(0)


def missing_topics(config: Any, topics: Iterable[str], timeout_s: float = 10.0) -> list[str]:
    """Which of ``topics`` do not exist, sorted (never creates them)."""
    return sorted(t for t, n in partition_counts(config, topics, timeout_s).items() if n is None)


def require_topics(config: Any, topics: Iterable[str], timeout_s: float = 10.0) -> dict[str, int]:
    """``{topic: partition count}``; :class:`TopicNotFound` names the missing ones."""
    counts = partition_counts(config, topics, timeout_s)
    missing = [t for t, n in counts.items() if n is None]
    if missing:
        raise TopicNotFound(missing)
    return counts  # type: ignore[return-value]  # no None left: the missing topics raised above


def read_to_end(
    consumer: Any,
    topic: str,
    partitions: Iterable[int],
    *,
    start: int = OFFSET_BEGINNING,
    assign: bool = True,
    batch_size: int = 1000,
    timeout_s: float = 30.0,
    end_hold_s: float = END_HOLD_S,
    poll_s: float = 0.05,
) -> Iterator[list[Any]]:
    """Yield lists of the data messages of ``partitions`` of ``topic``, from
    offset ``start`` (default: the beginning), until every partition's end has
    held for ``end_hold_s``.

    ``consumer`` must have ``enable.partition.eof`` on (see
    :func:`reader_config`); ``assign=False`` when it is already assigned.
    Raises :class:`ReadTimeout` (with the last transient error, if any) when
    the end is not confirmed within ``timeout_s``, :class:`KafkaIOError` on a
    fatal error. Closing the consumer is the caller's job.
    """
    partitions = sorted(partitions)
    if assign:
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
    pending = set(partitions)
    ended_at = time.monotonic()
    deadline = ended_at + timeout_s
    eof = KafkaError._PARTITION_EOF
    last_error = None
    while pending or time.monotonic() - ended_at < end_hold_s:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f"; last error: {last_error}" if last_error else ""
            raise ReadTimeout(
                f"topic {topic!r}: partitions {sorted(pending)} did not reach their "
                f"end within {timeout_s:g} s{detail}"
            )
        data = []
        for msg in consumer.consume(batch_size, min(poll_s, remaining)):
            err = msg.error()
            if err is not None:
                if err.code() == eof:
                    pending.discard(msg.partition())
                    if not pending:
                        ended_at = time.monotonic()
                elif err.fatal():
                    raise KafkaIOError(f"topic {topic!r}: {err.str()}")
                else:
                    last_error = err.str()  # transient: retried until the timeout
                continue
            if not pending:
                # More arrived after the end: wait for its end again.
                pending.add(msg.partition())
            data.append(msg)
        if data:
            yield data


def produce_with_backpressure(
    producer: Any,
    topic: str,
    *args: Any,
    poll_s: float = 0.05,
    on_wait: Callable[[], None] | None = None,
    **kwargs: Any,
) -> None:
    """``producer.produce(topic, *args, **kwargs)``; while librdkafka's
    local queue is full (``BufferError``), serve delivery reports with
    ``poll(poll_s)`` (then ``on_wait()``) and try again.

    In a hot loop, call ``produce`` directly and this only from its
    ``except BufferError`` branch.
    """
    produce = producer.produce
    while True:
        try:
            produce(topic, *args, **kwargs)
            return
        except BufferError:
            producer.poll(poll_s)
            if on_wait is not None:
                on_wait()


class DeliveryReports:
    """An ``on_delivery`` callback that counts outcomes and keeps the first errors."""

    def __init__(self, keep: int = 5):
        self.delivered = 0
        self.failed = 0
        self.examples: list[str] = []
        self._keep = keep

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        if len(self.examples) < self._keep:
            self.examples.append(f"{msg.topic()}[{msg.partition()}] key={msg.key()!r}: {err}")


def produce_all(
    producer: Any,
    messages: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    flush_timeout_s: float = 60.0,
    poll_every: int = 1000,
    check: bool = True,
) -> DeliveryReports:
    """Produce every ``(topic, produce kwargs)`` with back-pressure, flush, and
    count the delivery reports (messages carrying their own ``on_delivery``
    report there instead).

    With ``check`` (default), raises :class:`DeliveryFailed` if a delivery
    failed or messages were still undelivered after ``flush_timeout_s``;
    otherwise those count in the returned reports' ``failed``.
    """
    reports = DeliveryReports()
    for n, (topic, kwargs) in enumerate(messages, start=1):
        kwargs = dict(kwargs)
        kwargs.setdefault("on_delivery", reports)
        produce_with_backpressure(producer, topic, **kwargs)
        if n % poll_every == 0:
            producer.poll(0)
    remaining = producer.flush(flush_timeout_s)
    if remaining:
        reports.failed += remaining
        reports.examples.append(f"{remaining} message(s) not delivered within {flush_timeout_s:g} s")
    if check and reports.failed:
        raise DeliveryFailed(f"{reports.failed} message(s) not delivered; first: {reports.examples[0]}")
    return reports
