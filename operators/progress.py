"""Event-time progress across Bytewax's per-key state: routing to shards and watermarks.

Bytewax state is per key, but a watermark is a property of a whole input.
Stateful operators in this package therefore keep state in a fixed number of
*shards* (keys ``shard-000`` ...; a user lives in ``crc32(user_id) % shards``,
stable across processes and restarts), and every shard tracks each input's
watermark itself:

* the source reports its position with every batch (see
  :mod:`connectors.kafka_source`);
* :class:`ShardRouter` sends a batch's records to their shards together with
  that position, and broadcasts the position alone to every other shard (at
  most every ``progress_interval_s`` per partition, and at once when the
  partition's status changes);
* Bytewax delivers items from one worker to another in order, so when a
  shard learns "partition p has reached event time W" it already holds every
  record of p up to W;
* :class:`InputProgress` turns the positions into the input's watermark.

A partition's watermark is just below the largest event time read from it
(records with that same time may still follow); a partition whose reader is
caught up and tailing counts as the wall clock of its last poll (anything
produced later is fresh, so an idle input never holds results back); a
finished partition (``KAFKA_TAIL=false``) counts as the end of time. An
input's watermark is the minimum over all its partitions; partitions not heard
from yet hold it at the beginning of time.
"""

from __future__ import annotations

import time
import zlib
from typing import NamedTuple

from operators.records import (
    BEGINNING_OF_TIME_MS,
    END_OF_TIME_MS,
    DecodedBatch,
    Event,
    PartitionStatus,
    events_from_rows,
    rows_of,
)

CLICKS = 0
PROFILES = 1


class ShardInput(NamedTuple):
    """Part of one source batch, for one shard: its records and the position."""

    side: int  # CLICKS or PROFILES
    partition: int
    partition_count: int
    items: list
    max_event_ms: int | None
    status: PartitionStatus
    polled_at_ms: int

    def __reduce__(self):
        # Sent to the worker that owns the shard: events as plain tuples (see
        # operators.records, "Compact pickling").
        rows = rows_of(self.items, Event)
        if rows is None:
            return (ShardInput, tuple(self))
        return (_shard_input_from_rows, (*self[:3], rows, *self[4:]))


def _shard_input_from_rows(side, partition, count, rows, max_ms, status, polled_at) -> ShardInput:
    return ShardInput(side, partition, count, events_from_rows(rows), max_ms, status, polled_at)


def shard_index(key: str, shards: int) -> int:
    """The state shard of a key: stable across processes, workers and restarts."""
    return zlib.crc32(key.encode()) % shards


def shard_keys(shards: int) -> list[str]:
    """The Bytewax keys of the shards: ``shard-000`` ..."""
    return [f"shard-{i:03d}" for i in range(shards)]


def shard_key(key: str, shards: int) -> str:
    """The Bytewax key of a key's state shard."""
    return f"shard-{shard_index(key, shards):03d}"


class ShardRouter:
    """Splits decoded batches into per-shard inputs and spreads progress to all shards."""

    def __init__(
        self,
        side: int,
        shards: int,
        progress_interval_s: float = 0.1,
        caught_up_interval_s: float | None = None,
    ):
        """:arg progress_interval_s: least time between two broadcasts of one
            partition's position while it is read.
        :arg caught_up_interval_s: the same while the partition is caught up
            and tailing (default: ``progress_interval_s``). Live records may
            wait for these broadcasts (a click for the profiles watermark), so
            the join makes it short.
        """
        self.side = side
        self.keys = shard_keys(shards)
        self.shards = shards
        self.interval = progress_interval_s
        self.caught_up_interval = (
            progress_interval_s if caught_up_interval_s is None else caught_up_interval_s
        )
        # (partition) -> (monotonic time of last broadcast, status then)
        self._last: dict[int, tuple[float, PartitionStatus]] = {}

    def route(self, batch: DecodedBatch) -> list[tuple[str, ShardInput]]:
        shards = self.shards
        keys = self.keys
        crc32 = zlib.crc32
        groups: dict[int, list] = {}
        for item in batch.items:
            index = crc32(item.key.encode()) % shards  # shard_index(), inline: once per record
            group = groups.get(index)
            if group is None:
                groups[index] = [item]
            else:
                group.append(item)
        side = self.side
        out = [
            (
                keys[index],
                ShardInput(
                    side,
                    batch.partition,
                    batch.partition_count,
                    items,
                    batch.max_event_ms,
                    batch.status,
                    batch.polled_at_ms,
                ),
            )
            for index, items in groups.items()
        ]
        now = time.monotonic()
        last = self._last.get(batch.partition)
        interval = self.caught_up_interval if batch.status == PartitionStatus.CAUGHT_UP else self.interval
        if last is None or last[1] != batch.status or now - last[0] >= interval:
            self._last[batch.partition] = (now, batch.status)
            progress = ShardInput(
                side,
                batch.partition,
                batch.partition_count,
                [],
                batch.max_event_ms,
                batch.status,
                batch.polled_at_ms,
            )
            out.extend((keys[i], progress) for i in range(shards) if i not in groups)
        return out


class InputProgress:
    """The event-time watermark of one input (all partitions of one topic)."""

    __slots__ = ("partition_count", "partition_wm", "watermark")

    def __init__(self, state=None):
        if state is None:
            self.partition_wm: dict[int, int] = {}
            self.partition_count = 0
        else:
            self.partition_wm, self.partition_count = dict(state[0]), state[1]
        self.watermark = self._compute()

    def update(self, inp: ShardInput) -> int:
        status = inp.status
        if status == PartitionStatus.FINISHED:
            wm = END_OF_TIME_MS
        elif inp.max_event_ms is None:
            wm = BEGINNING_OF_TIME_MS
        elif status == PartitionStatus.CAUGHT_UP:
            # Everything in the partition has been read: its newest event time
            # is complete, and anything produced later is fresh.
            wm = max(inp.max_event_ms, inp.polled_at_ms)
        else:
            # More records with this same event time may still follow.
            wm = inp.max_event_ms - 1
        if status == PartitionStatus.CAUGHT_UP and inp.polled_at_ms > wm:
            wm = inp.polled_at_ms
        old = self.partition_wm.get(inp.partition, BEGINNING_OF_TIME_MS)
        if wm > old or inp.partition not in self.partition_wm:
            self.partition_wm[inp.partition] = max(wm, old)
            self.partition_count = inp.partition_count
            self.watermark = self._compute()
        elif inp.partition_count != self.partition_count:
            self.partition_count = inp.partition_count
            self.watermark = self._compute()
        return self.watermark

    def _compute(self) -> int:
        if self.partition_count == 0 or len(self.partition_wm) < self.partition_count:
            return BEGINNING_OF_TIME_MS
        return min(self.partition_wm.values())

    def snapshot(self):
        return (dict(self.partition_wm), self.partition_count)
