"""A Kafka source that emits batches and says where each partition's reader stands.

Bytewax's own ``KafkaSource`` emits one item per message and never tells the
dataflow whether it has caught up with a partition. The as-of join needs that
(an idle, caught-up profiles topic must not hold clicks back), and per-item
overhead is Bytewax's main cost. So this source:

* emits one :class:`~operators.records.SourceBatch` per poll of a partition,
  carrying the raw records and the reader's :class:`PartitionStatus`
  (``READING``, ``CAUGHT_UP`` while tailing, ``FINISHED`` with ``tail=False``);
* while caught up and idle, emits an empty batch every ``heartbeat_s`` so
  downstream progress keeps moving with the wall clock;
* keeps each partition's next offset and the topic's partition count as its
  snapshot (Bytewax recovery stores it together with operator state);
* checks that offset against the partition's range on resume and while
  running, and applies ``ON_INPUT_OFFSET_OUT_OF_RANGE`` when it lies outside
  (:mod:`connectors.offset_range`), and refuses a changed partition count.

Partitions are read by manual ``assign()``: no consumer group, no commits.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from connectors.client_logs import with_client_logs
from connectors.kafka_io import END_HOLD_S, NO_TIMESTAMP, KafkaIOError, TopicNotFound, require_topics
from connectors.offset_range import (
    InputOffsetOutOfRange,
    OutOfRangePolicy,
    PartitionCountChanged,
    RangeWatch,
    count_changed_message,
    describe,
    failure_message,
    resume_offset,
)
from operators.health import PROGRESS
from operators.metrics import INPUT_OFFSET_OUT_OF_RANGE
from operators.records import PartitionStatus, SourceBatch, SourceRecord, new_source_record

log = logging.getLogger(__name__)

_EOF = KafkaError._PARTITION_EOF
_OUT_OF_RANGE = KafkaError._AUTO_OFFSET_RESET

#: A partition's snapshot: (next offset, the topic's partition count). Stores
#: written before the count was kept hold the offset alone (an ``int``).
SourceState = tuple[int, int]


def stored_offset(state: SourceState | int) -> int:
    """The next offset a partition's snapshot holds, in either form."""
    return state[0] if isinstance(state, tuple) else state


_IDLE_BACKOFF = timedelta(milliseconds=5)


class KafkaSourceError(RuntimeError):
    """The source cannot read its topic (missing topic, broker error)."""


def topic_partition_counts(
    config: dict[str, str], topics: list[str], timeout_s: float = 10.0
) -> dict[str, int]:
    """``{topic: partition count}`` in one lookup; a clear error naming the first
    missing topic (the lookup never creates it: :func:`connectors.kafka_io.require_topics`)."""
    try:
        return require_topics(config, topics, timeout_s)
    except TopicNotFound as exc:
        missing = next(t for t in topics if t in exc.topics)
        raise KafkaSourceError(
            f"topic {missing!r} is not usable at {config.get('bootstrap.servers')}: "
            "it does not exist (create it first)"
        ) from exc
    except KafkaIOError as exc:
        raise KafkaSourceError(str(exc)) from exc


def list_topic_partitions(config: dict[str, str], topic: str, timeout_s: float = 10.0) -> int:
    """Number of partitions of ``topic`` (see :func:`topic_partition_counts`)."""
    return topic_partition_counts(config, [topic], timeout_s)[topic]


class _BatchPartition(StatefulSourcePartition[SourceBatch, SourceState]):
    def __init__(
        self,
        config: dict[str, str],
        topic: str,
        partition: int,
        partition_count: int,
        next_offset: int,
        tail: bool,
        batch_size: int,
        heartbeat_s: float,
        finish_confirm_s: float,
        group_id: str | None = None,
        resumed: bool = False,
        on_out_of_range: OutOfRangePolicy = OutOfRangePolicy.FAIL,
        job: str = "",
    ):
        self._topic = topic
        self._partition = partition
        self._partition_count = partition_count
        self._offset = next_offset
        self._tail = tail
        self._batch_size = batch_size
        self._heartbeat_s = heartbeat_s
        self._status = PartitionStatus.READING
        self._last_emit = 0.0
        self._done = False
        self._idle = False
        self._finish_confirm_s = finish_confirm_s
        self._end_seen_at: float | None = None
        self._on_out_of_range = on_out_of_range
        self._range_watch = RangeWatch()
        self._out_of_range_count = INPUT_OFFSET_OUT_OF_RANGE.labels(job, topic, on_out_of_range.value)
        self._tp = TopicPartition(topic, partition)
        consumer_config = {
            "group.id": "clickstream-dataflows-unused",
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            "enable.partition.eof": "true",
        }
        consumer_config.update(config)
        # Never let librdkafka reset an out-of-range offset silently: it
        # reports it and ON_INPUT_OFFSET_OUT_OF_RANGE decides.
        consumer_config["auto.offset.reset"] = "error"
        #: Offsets are committed to this consumer group for monitoring only
        #: (lag in standard Kafka tools); recovery resumes from snapshots.
        self._group_id = group_id
        if group_id is not None:
            consumer_config["group.id"] = group_id
        #: The offset the last snapshot holds: committed at the next snapshot,
        #: once that one is durable, so a commit never runs ahead of recovery.
        self._committable: int | None = next_offset if resumed else None
        self._consumer = Consumer(with_client_logs(consumer_config))
        self._consumer.assign([TopicPartition(topic, partition, next_offset)])
        PROGRESS.open_partition((topic, partition))

    def next_batch(self) -> list[SourceBatch]:
        if self._done:
            raise StopIteration()
        # Never block the worker: librdkafka prefetches in its own threads, and
        # an empty poll makes next_awake() back off for a few milliseconds.
        messages = self._consumer.consume(self._batch_size, 0)
        self._idle = not messages
        if not messages:
            # The fetch responses' watermarks: an offset past the end gets no
            # error from Tansu, only empty fetches (see connectors.offset_range).
            low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
            if self._range_watch.confirmed(self._offset, low, high, time.monotonic()):
                self._apply_out_of_range_policy(low, high)
        records: list[SourceRecord] = []
        append = records.append
        reached_end = False
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == _EOF:
                    reached_end = True
                    continue
                if err.code() == _OUT_OF_RANGE:
                    # The broker's own word: ask it for the range (not the cache).
                    low, high = self._consumer.get_watermark_offsets(self._tp, timeout=10)
                    self._apply_out_of_range_policy(low, high, broker_said=True)
                    return []
                if err.fatal() or not err.retriable():
                    raise KafkaSourceError(
                        f"error reading {self._topic!r} partition {self._partition}: {err.str()}"
                    )
                log.warning("retriable error on %s[%d]: %s", self._topic, self._partition, err.str())
                continue
            ts_type, ts = msg.timestamp()
            append(
                new_source_record(
                    (
                        self._partition,
                        msg.offset(),
                        msg.key(),
                        msg.value(),
                        None if ts_type == NO_TIMESTAMP else ts,
                        msg.headers(),
                    )
                )
            )
        if records:
            self._range_watch.reset()  # the out-of-range hold must be continuous
            self._offset = records[-1].offset + 1
            # A record after an EOF event in the same poll means more arrived.
            if messages[-1].error() is None:
                reached_end = False
        previous = self._status
        now = PROGRESS.polled_at = time.monotonic()
        if records:
            self._end_seen_at = None
            PROGRESS.input_at = now
        if reached_end and not self._tail:
            # Not tailing: the end must hold for `finish_confirm_s` before the
            # partition counts as finished (see KafkaBatchSource).
            self._end_seen_at = now
            reached_end = False
        if reached_end:
            self._status = PartitionStatus.CAUGHT_UP
        elif records:
            self._status = PartitionStatus.READING
        elif self._end_seen_at is not None and now - self._end_seen_at >= self._finish_confirm_s:
            self._status = PartitionStatus.FINISHED
        heartbeat_due = (
            self._status == PartitionStatus.CAUGHT_UP and now - self._last_emit >= self._heartbeat_s
        )
        if self._status != previous:
            PROGRESS.set_reading((self._topic, self._partition), self._status == PartitionStatus.READING)
        if not records and self._status == previous and not heartbeat_due:
            return []
        self._last_emit = now
        if self._status == PartitionStatus.FINISHED:
            self._done = True
            self._commit(self._offset)  # a finished run shows zero lag
        return [
            SourceBatch(
                self._topic,
                self._partition,
                self._partition_count,
                records,
                self._status,
                int(time.time() * 1000),
            )
        ]

    def next_awake(self) -> datetime | None:
        if self._idle:
            return datetime.now(UTC) + _IDLE_BACKOFF
        return None

    def _apply_out_of_range_policy(self, low: int, high: int, broker_said: bool = False) -> None:
        """Stop (``fail``) or move to the partition's first or end offset, with one line.

        ``broker_said``: the broker reported the offset out of range; a range
        that still holds it (stale or wrong) must not make the source retry the
        same offset forever, so that stops the job whatever the policy."""
        self._out_of_range_count.inc()
        offset = self._offset
        target = resume_offset(self._on_out_of_range, offset, low, high)
        if target is None or (broker_said and target == offset):
            raise InputOffsetOutOfRange(failure_message(self._topic, self._partition, offset, low, high))
        log.warning(
            "%s (ON_INPUT_OFFSET_OUT_OF_RANGE=%s): resuming at offset %d",
            describe(self._topic, self._partition, offset, low, high),
            self._on_out_of_range.value,
            target,
        )
        self._offset = target
        self._end_seen_at = None
        self._consumer.assign([TopicPartition(self._topic, self._partition, target)])

    def snapshot(self) -> SourceState:
        PROGRESS.epoch_at = time.monotonic()  # Bytewax calls it once per epoch (see operators.health)
        if self._group_id is not None:
            if self._committable is not None:
                self._commit(self._committable)
            self._committable = self._offset
        return (self._offset, self._partition_count)

    def _commit(self, offset: int) -> None:
        if self._group_id is None or offset < 0:  # nothing read yet: nothing to commit
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self._topic, self._partition, offset)], asynchronous=False
            )
        except KafkaException as exc:  # monitoring only: never stop the job for it
            log.warning(
                "could not commit %s[%d] offset %d to group %r: %s",
                self._topic,
                self._partition,
                offset,
                self._group_id,
                exc,
            )

    def close(self) -> None:
        PROGRESS.close_partition((self._topic, self._partition))
        self._consumer.close()


class KafkaBatchSource(FixedPartitionedSource[SourceBatch, SourceState]):
    """Read every partition of one topic as batches with position reports."""

    def __init__(
        self,
        config: dict[str, str],
        topic: str,
        *,
        tail: bool = True,
        batch_size: int = 1000,
        heartbeat_s: float = 0.1,
        starting_offset: int = OFFSET_BEGINNING,
        finish_confirm_s: float = END_HOLD_S,
        group_id: str | None = None,
        on_out_of_range: OutOfRangePolicy = OutOfRangePolicy.FAIL,
        job: str = "",
    ):
        """:arg config: librdkafka properties (``bootstrap.servers`` and any other).

        :arg tail: keep reading at the end of a partition (``False``: finish).
        :arg heartbeat_s: how often a caught-up idle partition reports progress.
        :arg finish_confirm_s: with ``tail=False``, how long the end of a
            partition must hold (no new record) before it counts as finished
            (default :data:`connectors.kafka_io.END_HOLD_S`, which says why).
        :arg group_id: commit each partition's offset to this consumer group
            for monitoring (lag in Kafka tools): the offset a snapshot holds,
            at the next snapshot, and the end offset when a partition finishes.
            ``None``: no commits. Recovery never reads them.
        :arg on_out_of_range: what to do with a next offset outside its
            partition, on resume or while running (:mod:`connectors.offset_range`).
        :arg job: the job's name, a label of the out-of-range metric.
        """
        self._config = dict(config)
        self._topic = topic
        self._tail = tail
        self._batch_size = batch_size
        self._heartbeat_s = heartbeat_s
        self._starting_offset = starting_offset
        self._finish_confirm_s = finish_confirm_s
        self._group_id = group_id
        self._on_out_of_range = on_out_of_range
        self._job = job
        self._partition_count: int | None = None

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def group_id(self) -> str | None:
        """The consumer group offsets are committed to (None: no commits)."""
        return self._group_id

    def _count(self) -> int:
        if self._partition_count is None:
            self._partition_count = list_topic_partitions(self._config, self._topic)
        return self._partition_count

    def list_parts(self) -> list[str]:
        return [f"{i}-{self._topic}" for i in range(self._count())]

    def build_part(
        self, step_id: str, for_part: str, resume_state: SourceState | int | None
    ) -> _BatchPartition:
        index, _, topic = for_part.partition("-")
        if topic != self._topic:
            raise KafkaSourceError(
                f"recovery state names topic {topic!r} but step {step_id!r} reads "
                f"{self._topic!r}: reset the recovery directory to switch topics"
            )
        resume_at: int | None
        if isinstance(resume_state, tuple):
            resume_at, stored_count = resume_state
            if stored_count != self._count():
                # Not a policy case: see connectors.offset_range.count_changed_message.
                raise PartitionCountChanged(count_changed_message(self._topic, stored_count, self._count()))
        else:
            resume_at = resume_state
        return _BatchPartition(
            self._config,
            self._topic,
            int(index),
            self._count(),
            self._starting_offset if resume_at is None else resume_at,
            self._tail,
            self._batch_size,
            self._heartbeat_s,
            self._finish_confirm_s,
            self._group_id,
            resume_at is not None,
            self._on_out_of_range,
            self._job,
        )
