"""``kafka_output``: write each output record to Kafka exactly once, across crashes.

Bytewax snapshots input offsets and state together, and after a crash it
replays everything since the last snapshot, so a plain sink writes those
records a second time. This sink removes the duplicates:

* every output message carries a deterministic *lineage id* (the click's
  source topic/partition/offset, the window, the session...), written as the
  header ``lineage``;
* the sink has one Bytewax partition per output Kafka partition, so each
  Kafka partition has exactly one writer; messages are routed to it by
  ``crc32(key) % partitions`` of their topic (``crc32(lineage id)`` for a
  message without a key), stable across runs, and it produces to that Kafka
  partition explicitly;
* a sink partition snapshots where the next resume must start reading back:
  the highest offset it has seen delivered, or, while records written before
  the last crash have not been produced again yet, the offset of the oldest of
  them (the snapshot must not move past a record the replay may still
  produce: a later resume would forget it and write it twice). Bytewax stores
  that with the epoch's input offsets and state. On resume the partition reads
  its Kafka partition from there to the end, collects the lineage ids, and
  skips those when the replay produces them again;
* writes that arrive while the read-back runs are queued and sent by the
  read-back thread when it is done (so the partitions' read-backs overlap);
* writes are sent asynchronously and flushed when Bytewax takes the epoch's
  snapshot (and at close), so everything a snapshot covers is in Kafka. A
  message the broker rejects raises :class:`DeliveryError`: the dataflow
  stops loudly and recovery replays it.

Plain and ``read_committed`` consumers see the same records (no transactions). Without a
snapshot (first start, a crash before the first one) a partition is read from its beginning.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import zlib
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from connectors.kafka_io import (
    KafkaIOError,
    ReadTimeout,
    produce_with_backpressure,
    read_to_end,
    reader_config,
    with_client_logs,
)
from connectors.kafka_source import list_topic_partitions
from operators.records import OutMessage

log = logging.getLogger(__name__)

LINEAGE_HEADER = "lineage"


class DeliveryError(RuntimeError):
    """The broker did not accept messages; the dataflow must stop (and replay)."""


class OutputLayout:
    """Which Bytewax sink partition writes which (topic, Kafka partition).

    Sink partition ``i`` is the i-th (topic, Kafka partition) pair, topics in
    the given order; it is named ``f"{i:06d}"`` (``"000000"``, ``"000001"``...)
    and messages are routed to it under the item key ``str(i)``, which
    ``part_fn`` turns back into ``i``. Partition counts are read once, lazily.
    """

    def __init__(self, config: dict[str, str], topics: list[str]):
        self._config = dict(config)
        self.topics = list(dict.fromkeys(topics))
        self._counts: dict[str, int] | None = None
        self._base: dict[str, int] = {}

    def counts(self) -> dict[str, int]:
        if self._counts is None:
            counts = {t: list_topic_partitions(self._config, t) for t in self.topics}
            base, total = {}, 0
            for topic in self.topics:
                base[topic] = total
                total += counts[topic]
            self._base, self._counts = base, counts
        return self._counts

    def slots(self) -> list[tuple[str, int]]:
        counts = self.counts()
        return [(t, p) for t in self.topics for p in range(counts[t])]

    def route(self, messages: list[OutMessage]) -> list[tuple[str, list[OutMessage]]]:
        """Group messages by destination slot; the key is the slot index as a
        decimal string (``"7"``, not zero-padded)."""
        counts = self.counts()
        base = self._base
        groups: dict[int, list[OutMessage]] = {}
        for msg in messages:
            n = counts.get(msg.topic)
            if n is None:
                raise DeliveryError(f"no output slot for topic {msg.topic!r}: not configured")
            basis = msg.key if msg.key is not None else (msg.lineage or b"")
            slot = base[msg.topic] + zlib.crc32(basis) % n
            group = groups.get(slot)
            if group is None:
                groups[slot] = [msg]
            else:
                group.append(msg)
        return [(str(slot), group) for slot, group in groups.items()]


def read_lineage_tail(
    config: dict[str, str], topic: str, partition: int, start: int, timeout_s: float = 120.0
) -> tuple[dict[bytes, int], int | None]:
    """The lineage ids of the records of one partition from ``start`` to its
    confirmed end, each with the offset of its first record, and the highest
    offset seen (None if the tail is empty)."""
    consumer = Consumer(with_client_logs(reader_config(config, **{"group.id": "clickstream-exactly-once"})))
    seen: dict[bytes, int] = {}
    last: int | None = None
    try:
        for batch in read_to_end(consumer, topic, [partition], start=start, timeout_s=timeout_s):
            for msg in batch:
                last = msg.offset()
                # The sink appends its header last; an earlier `lineage` header
                # is the input's own (dead letters keep the original headers).
                lineage = None
                for name, value in msg.headers() or ():
                    if name == LINEAGE_HEADER:
                        lineage = value
                if lineage is not None and lineage not in seen:
                    seen[lineage] = last
    except (ReadTimeout, KafkaIOError) as exc:
        raise DeliveryError(f"could not read back {topic}[{partition}] from {start}: {exc}") from exc
    finally:
        consumer.close()
    return seen, last


class _ExactlyOncePartition(StatefulSinkPartition[list[OutMessage], int | None]):
    #: How long (processing time after a resume) the snapshot stays pinned
    #: before records written before the restart that the replay has not
    #: produced again (e.g. a click now resolved to another topic). Longer
    #: than any delay of the jobs' operators (profile wait, lateness).
    pin_horizon_s: float = 3600.0

    def __init__(self, config: dict[str, str], topic: str, partition: int, resume: int | None):
        self.topic = topic
        self.partition = partition
        self.last_offset = resume
        # Lineage ids already in Kafka after the resume point -> their offset;
        # an entry leaves when the replay produces it (and it is skipped).
        self.skip: dict[bytes, int] = {}
        # (offset, lineage) of `skip`, oldest first; entries already skipped
        # are dropped lazily at snapshot time.
        self._pending: list[tuple[int, bytes]] = []
        self._resumed_at = time.monotonic()
        # Read the tail back in the background. Until it is done, writes are
        # buffered and the thread writes them when it finishes: Bytewax builds
        # a partition on its first write, one after another, so a blocking
        # first write would serialise every partition's read-back.
        self._lock = threading.Lock()
        self._ready = False
        self._buffer: list[list[list[OutMessage]]] = []
        self._tail_error: BaseException | None = None
        self._failed = False  # an error was raised: close() must not raise again
        self._tail: threading.Thread | None = threading.Thread(
            target=self._read_tail,
            args=(config, 0 if resume is None else resume + 1),
            name=f"tail-{topic}-{partition}",
            daemon=True,
        )
        self._tail.start()
        producer_config: dict[str, Any] = {
            "linger.ms": "5",
            "batch.num.messages": "10000",
            "enable.idempotence": "true",
            "message.max.bytes": str(16 * 1024 * 1024),
            **config,
        }
        # Delivery reports land here through a C-level callable (no Python
        # frame per message): reports[None] is the latest successful delivery
        # (reports of one partition come in offset order), any other key an
        # error. Read by `_collect_reports` after every poll and flush.
        self._reports: dict[KafkaError | None, Message] = {}
        producer_config["on_delivery"] = self._reports.__setitem__
        self._producer = Producer(with_client_logs(producer_config))
        self._failures: list[str] = []
        self.written = 0
        self.skipped = 0

    def _read_tail(self, config: dict[str, str], start: int) -> None:
        try:
            skip, tail_last = read_lineage_tail(config, self.topic, self.partition, start)
        except BaseException as exc:  # re-raised by the next write, snapshot or close
            self._fail_in_background(exc)
            return
        if skip:
            log.info(
                "%s[%d]: %d record(s) written after the last snapshot (offsets %d..%d) "
                "will not be written again",
                self.topic,
                self.partition,
                len(skip),
                start,
                tail_last,
            )
        with self._lock:
            self.skip = skip
            self._pending = sorted((offset, lineage) for lineage, offset in skip.items())
            if tail_last is not None:
                self.last_offset = tail_last
            buffered, self._buffer = self._buffer, []
            try:
                for items in buffered:
                    self._write(items)
            except BaseException as exc:
                self._fail_in_background(exc)
                return
            # Only now: a write that waited for the lock goes after the buffer.
            self._ready = True

    def _fail_in_background(self, exc: BaseException) -> None:
        # Logged here too: it may surface only in `snapshot`, where Bytewax
        # does not print the exception it stops on.
        log.error("%s[%d]: %s: %s", self.topic, self.partition, type(exc).__name__, exc)
        self._tail_error = exc

    def _wait_for_tail(self) -> None:
        """Block until the read-back (and the writes buffered meanwhile) are
        done; re-raise (once) what went wrong in it."""
        if self._tail is not None:
            self._tail.join()
            self._tail = None
        self._raise_tail_error()

    def _raise_tail_error(self) -> None:
        error, self._tail_error = self._tail_error, None
        if error is not None:
            self._failed = True
            raise error

    def _collect_reports(self) -> None:
        reports = self._reports
        if not reports:
            return
        delivered = reports.pop(None, None)
        if delivered is not None:
            offset = delivered.offset()
            # A successful delivery always has an offset (the stubs allow None).
            if self.last_offset is None or offset > self.last_offset:  # type: ignore[operator]
                self.last_offset = offset
        for err, msg in reports.items():  # the None key (successes) was popped: errors only
            self._failures.append(f"{msg.topic()}[{msg.partition()}] key={msg.key()!r}: {err.str()}")  # type: ignore[union-attr]
        reports.clear()

    def write_batch(self, items: list[list[OutMessage]]) -> None:
        if not self._ready:
            with self._lock:
                self._raise_tail_error()
                if not self._ready:
                    self._buffer.append(items)
                    return
        self._write(items)

    def _write(self, items: list[list[OutMessage]]) -> None:
        produce = self._producer.produce
        topic, partition, skip = self.topic, self.partition, self.skip
        for messages in items:
            for msg in messages:
                lineage = msg.lineage or b""
                if skip and lineage in skip:
                    del skip[lineage]
                    self.skipped += 1
                    continue
                original = msg.headers
                if original:
                    headers: list[tuple[str, str | bytes | None]] = [*original, (LINEAGE_HEADER, lineage)]
                else:
                    headers = [(LINEAGE_HEADER, lineage)]
                try:
                    try:
                        produce(topic, msg.value, msg.key, partition=partition, headers=headers)
                    except BufferError:
                        produce_with_backpressure(
                            self._producer,
                            topic,
                            msg.value,
                            msg.key,
                            partition=partition,
                            headers=headers,
                            poll_s=0.1,
                            on_wait=self._collect_reports,
                        )
                except KafkaException as exc:
                    self._failed = True
                    raise DeliveryError(
                        f"cannot produce to {topic}[{partition}] (key={msg.key!r}): {exc}"
                    ) from exc
                self.written += 1
        # Serve delivery reports without waiting; a failure stops the flow.
        self._producer.poll(0)
        self._collect_reports()
        self._raise_failures()

    def _flush(self) -> None:
        remaining = self._producer.flush(60)
        self._collect_reports()
        if remaining:
            self._failed = True
            raise DeliveryError(
                f"{remaining} message(s) to {self.topic}[{self.partition}] not delivered in 60 s"
            )
        self._raise_failures()

    def _raise_failures(self) -> None:
        if self._failures:
            failures, self._failures = self._failures, []
            self._failed = True
            raise DeliveryError(
                f"message(s) rejected by the broker ({len(failures)} kind(s) of error); first: {failures[0]}"
            )

    def resume_point(self) -> int | None:
        """Where the next resume must read back from (exclusive): before the
        oldest record the replay has not produced again, else the last
        delivered offset."""
        pending, skip = self._pending, self.skip
        while pending and pending[0][1] not in skip:
            heapq.heappop(pending)
        if pending and time.monotonic() - self._resumed_at > self.pin_horizon_s:
            log.warning(
                "%s[%d]: %d record(s) written before the last restart were not produced "
                "again within %.0f s; the read-back of a later resume no longer covers them",
                self.topic,
                self.partition,
                len(skip),
                self.pin_horizon_s,
            )
            pending.clear()
        if pending:
            return pending[0][0] - 1
        return self.last_offset

    def snapshot(self) -> int | None:
        # Everything written in this epoch is delivered before the snapshot
        # that covers it is taken: that is what makes the skip-on-resume exact.
        self._wait_for_tail()
        self._flush()
        return self.resume_point()

    def close(self) -> None:
        if self._failed:
            # The flow is already stopping on this partition's error; raising
            # again from Bytewax's destructor would abort the process.
            self._producer.flush(5)
            return
        self._wait_for_tail()
        self._flush()
        if self.written or self.skipped:
            log.info(
                "%s[%d]: wrote %d, skipped %d already written",
                self.topic,
                self.partition,
                self.written,
                self.skipped,
            )


class ExactlyOnceKafkaSink(FixedPartitionedSink[list[OutMessage], int | None]):
    """One sink partition per output Kafka partition; see the module docstring."""

    def __init__(self, config: dict[str, str], layout: OutputLayout):
        self._config = dict(config)
        self._layout = layout

    def list_parts(self) -> list[str]:
        return [f"{i:06d}" for i in range(len(self._layout.slots()))]

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None):
        topic, partition = self._layout.slots()[int(for_part)]
        return _ExactlyOncePartition(self._config, topic, partition, resume_state)


@operator
def kafka_output(
    step_id: str, up: Stream[list[OutMessage]], config: dict[str, str], topics: list[str]
) -> None:
    """Write lists of messages (each naming its topic, one of ``topics``) exactly once."""
    layout = OutputLayout(config, topics)
    routed = op.flat_map("route", up, layout.route)
    op.output("write", routed, ExactlyOnceKafkaSink(config, layout))
