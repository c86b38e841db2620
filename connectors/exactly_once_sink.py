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
  produce: a later resume would forget it and write it twice), as
  ``(topic, partition, offset)``. Bytewax stores that with the epoch's input
  offsets and state. On resume the partition refuses a snapshot of another
  (topic, partition) (:mod:`connectors.output_layout`), reads its Kafka
  partition from there to the end, collects the lineage ids, and skips those
  when the replay produces them again; an offset beyond the partition's end
  (topic recreated) fails at once (:mod:`connectors.lineage_readback`);
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
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connectors.client_logs import with_client_logs
from connectors.kafka_io import produce_with_backpressure
from connectors.lineage_readback import LINEAGE_HEADER, DeliveryError, read_lineage_tail
from connectors.output_layout import OutputLayout, SinkSnapshot, SinkStateMismatch, snapshot_offset
from operators.records import OutMessage

# Imported from here by the jobs and tests (the split modules hold the details).
__all__ = ["DeliveryError", "ExactlyOnceKafkaSink", "OutputLayout", "SinkStateMismatch", "kafka_output"]

log = logging.getLogger(__name__)


class _ExactlyOncePartition(StatefulSinkPartition[list[OutMessage], SinkSnapshot]):
    #: How long (processing time after a resume) the snapshot stays pinned
    #: before records written before the restart that the replay has not
    #: produced again (e.g. a click now resolved to another topic). Longer
    #: than any delay of the jobs' operators (profile wait, lateness).
    pin_horizon_s: float = 3600.0

    def __init__(
        self, config: dict[str, str], topic: str, partition: int, resume_state: SinkSnapshot | int | None
    ):
        # Refuses (before any read or write) a snapshot of another slot.
        resume = snapshot_offset(resume_state, topic, partition)
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
        }
        producer_config.update(config)
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
        written = 0
        try:
            for messages in items:
                for _, key, value, original, lineage in messages:
                    lineage = lineage or b""
                    if skip and lineage in skip:
                        del skip[lineage]
                        self.skipped += 1
                        continue
                    if original:
                        headers: list[tuple[str, str | bytes | None]] = [*original, (LINEAGE_HEADER, lineage)]
                    else:
                        headers = [(LINEAGE_HEADER, lineage)]
                    try:
                        try:
                            # Positional: keyword arguments cost confluent-kafka's
                            # argument parser more than the produce itself (measured:
                            # ~9,900 instructions per call with `partition=`,
                            # `headers=`, ~5,900 positional). The two Nones leave the
                            # producer's delivery callback in place; 0 = now.
                            produce(topic, value, key, partition, None, None, 0, headers)
                        except BufferError:
                            produce_with_backpressure(
                                self._producer,
                                topic,
                                value,
                                key,
                                partition=partition,
                                headers=headers,
                                poll_s=0.1,
                                on_wait=self._collect_reports,
                            )
                    except KafkaException as exc:
                        self._failed = True
                        raise DeliveryError(
                            f"cannot produce to {topic}[{partition}] (key={key!r}): {exc}"
                        ) from exc
                    written += 1
        finally:  # what was produced before an error counts too
            self.written += written
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

    def snapshot(self) -> SinkSnapshot:
        # Everything written in this epoch is delivered before the snapshot
        # that covers it is taken: that is what makes the skip-on-resume exact.
        self._wait_for_tail()
        self._flush()
        return (self.topic, self.partition, self.resume_point())

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


class ExactlyOnceKafkaSink(FixedPartitionedSink[list[OutMessage], SinkSnapshot]):
    """One sink partition per output Kafka partition; see the module docstring."""

    def __init__(self, config: dict[str, str], layout: OutputLayout):
        self._config = dict(config)
        self._layout = layout

    def list_parts(self) -> list[str]:
        return [f"{i:06d}" for i in range(len(self._layout.slots()))]

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: SinkSnapshot | int | None):
        topic, partition = self._layout.slots()[int(for_part)]
        return _ExactlyOncePartition(self._config, topic, partition, resume_state)


@operator
def kafka_output(
    step_id: str,
    up: Stream[list[OutMessage]],
    config: dict[str, str],
    topics: list[str],
    routed: Stream[tuple[str, list[OutMessage]]] | None = None,
    layout: OutputLayout | None = None,
) -> None:
    """Write lists of messages (each naming its topic, one of ``topics``) exactly once.

    ``routed``: messages already grouped by sink slot with ``layout`` (which
    must list ``topics``), e.g. by an encoder that routes as it encodes; they
    skip this step's own routing.
    """
    if layout is None:
        layout = OutputLayout(config, topics)
    elif layout.topics != list(dict.fromkeys(topics)):
        raise ValueError(f"layout lists {layout.topics}, not the topics {topics}")
    # Every list that reached this step in one activation, routed together:
    # one item per sink partition instead of one per (list, partition).
    by_slot = op.flat_map_batch("route", up, layout.route_lists)
    if routed is not None:
        by_slot = op.merge("merge_routed", by_slot, routed)
    op.output("write", by_slot, ExactlyOnceKafkaSink(config, layout))
