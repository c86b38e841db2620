"""The record types that flow between the package's operators.

Streams here carry *batches* (one item per Kafka poll of one partition), not
single records: Bytewax's cost is per item, so a batch of a few hundred
records pays it once. Every type is a NamedTuple: cheap to build, to pickle
(for snapshots and for exchange between processes) and immutable.
"""

from __future__ import annotations

import zlib
from enum import IntEnum
from functools import partial
from typing import NamedTuple, final

import orjson

Headers = list[tuple[str, bytes]]

#: Watermark value meaning "this input will never produce anything again".
END_OF_TIME_MS = 2**62
#: Watermark value meaning "nothing known yet".
BEGINNING_OF_TIME_MS = -(2**62)


class PartitionStatus(IntEnum):
    """Where a source partition's reader stands after a poll."""

    #: Behind the end of the partition: more records are waiting.
    READING = 0
    #: At the end of the partition and tailing it: anything new is fresh.
    CAUGHT_UP = 1
    #: At the end of the partition and not tailing (KAFKA_TAIL=false): done.
    FINISHED = 2


class SourceRecord(NamedTuple):
    """One Kafka message as read, bytes untouched."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    #: Kafka message timestamp in epoch ms, or None when the broker has none.
    timestamp_ms: int | None
    headers: Headers | None = None


class SourceBatch(NamedTuple):
    """What one poll of one Kafka partition produced, with the reader's position.

    A batch may hold no records: it then only reports progress (the reader
    reached the end of its partition, or is still there at ``polled_at_ms``).
    """

    topic: str
    partition: int
    #: How many partitions the topic has (so a consumer of progress reports
    #: knows when it has heard from all of them).
    partition_count: int
    records: list[SourceRecord]
    status: PartitionStatus
    #: Wall clock (epoch ms) when the poll returned.
    polled_at_ms: int


class Event(NamedTuple):
    """A valid input record: its key, its event time and where it came from.

    Every operator works on events, whatever the topic's schema: decoding
    (``operators.record_mapping``) finds the key and the event time where the
    settings say, and keeps the original value bytes for the outputs.
    """

    #: The join/grouping key (a user id in this package's jobs), as a string.
    key: str
    #: Event time, epoch milliseconds.
    ts_ms: int
    #: The original value bytes (a JSON object), emitted unchanged.
    value: bytes
    topic: str
    partition: int
    offset: int
    #: The original Kafka message key (for outputs that must keep it, e.g. late clicks).
    message_key: bytes | None = None


#: The roles an event plays in this package's jobs (same type, clearer signatures).
Click = Event
ProfileVersion = Event


@final  # never subclassed: lets mypy narrow the hot paths' `type(x) is DeadLetter` checks both ways
class DeadLetter(NamedTuple):
    """A record that could not be processed, with why and where it came from."""

    record: SourceRecord
    topic: str
    #: Short machine-readable reason, e.g. ``invalid_json``.
    reason: str
    #: Human-readable detail of the reason.
    detail: str
    #: Which step rejected it, e.g. ``decode_click``.
    stage: str


Decoded = Event


class DecodedBatch(NamedTuple):
    """A SourceBatch after decoding: the valid records and the source position."""

    topic: str
    partition: int
    partition_count: int
    items: list[Decoded]
    #: Largest event time among ``items`` (None when there are none).
    max_event_ms: int | None
    status: PartitionStatus
    polled_at_ms: int


class JoinResult(NamedTuple):
    """A click and the profile version it was matched with (or None)."""

    click: Click
    profile: ProfileVersion | None


class LateClick(NamedTuple):
    """A click that arrived after the window it belongs to was closed and emitted."""

    click: Click
    #: The (first) window it missed, epoch ms, end exclusive.
    window_start_ms: int
    window_end_ms: int
    #: The watermark when it arrived.
    watermark_ms: int


def fast_new(cls):
    """A constructor taking one tuple of all fields, for hot paths.

    ``Cls(a, b)`` on a NamedTuple runs a Python-level ``__new__``; measured in
    the clicks job it was the largest single cost (about 14% of CPU).
    ``tuple.__new__`` is a C call, and a ``partial`` of it adds no Python frame
    (a lambda around it still did: ~10% of the job's samples).
    """
    return partial(tuple.__new__, cls)


class OutMessage(NamedTuple):
    """A message for the Kafka sink: the topic is chosen per message."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None
    #: Deterministic id of what this message reports (e.g. the click's
    #: topic/partition/offset): the exactly-once sink writes each id once.
    lineage: bytes | None = None


new_source_record = fast_new(SourceRecord)
new_event = fast_new(Event)
new_join_result = fast_new(JoinResult)
new_out_message = fast_new(OutMessage)


# -- Compact pickling for what crosses between processes ------------------------
# Bytewax pickles every item a keyed step sends to another worker process. A
# NamedTuple pickles through a Python-level ``__getnewargs__`` per object
# (measured: ~15,000 instructions per event for a dumps + loads round trip); a
# plain tuple pickles in C (~6,000 with the rebuild). The batches that cross
# (events to their join shard, messages to their sink partition) therefore
# pickle their records as plain tuples and rebuild them on arrival.


def events_from_rows(rows: list[tuple]) -> list[Event]:
    """Events rebuilt from their pickled plain tuples."""
    return list(map(new_event, rows))


def rows_of(items: list, cls: type) -> list[tuple] | None:
    """``items`` as plain tuples if every one is a ``cls``, else None."""
    if items and set(map(type, items)) == {cls}:
        return list(map(tuple, items))
    return None


def dumps_compact(obj: object) -> bytes:
    """``orjson.dumps(obj)`` for bytes that are kept (in state, in a cache).

    orjson 3.13 returns each result with its whole output buffer allocated:
    about 4 KB even for a 6-byte string (tracemalloc). A copy is its size.
    """
    return b"%b" % orjson.dumps(obj)


def slot_for(slots: tuple[int, int], key: bytes | None, lineage: bytes | None) -> int:
    """The sink slot of a message among its topic's ``slots`` (first, count):
    by ``crc32`` of its key, or of its lineage id when it has no key. Stable
    across runs (every writer of a Kafka partition must agree on it)."""
    return slots[0] + zlib.crc32(key if key is not None else (lineage or b"")) % slots[1]


class OutBatch(list):
    """A list of :class:`OutMessage` for one sink partition; pickles compactly."""

    def __reduce__(self):
        rows = rows_of(self, OutMessage)
        if rows is None:
            return (OutBatch, (list(self),))
        return (_out_batch_from_rows, (rows,))


def _out_batch_from_rows(rows: list[tuple]) -> OutBatch:
    return OutBatch(map(new_out_message, rows))
