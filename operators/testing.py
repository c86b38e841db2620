"""Build the package's operator inputs from Python lists, for ``bytewax.testing`` flows.

Every stateful operator here (``asof_join``, ``interval_join``, ``top_users``,
``click_alerts``, ``user_sessions``) reads **decoded batches**: a
:class:`DecodedBatch` is what one poll of one Kafka partition produced (a list
of :class:`Event` s, each with its key, event time, original bytes and
coordinates) plus the reader's position. The position is what moves the
input's watermark (see :mod:`operators.progress`):

* a ``READING`` batch says "this partition has reached just below the largest
  event time in it";
* a ``CAUGHT_UP`` batch (tailing) says "everything up to the poll's wall
  clock has been read";
* a ``FINISHED`` batch says "this partition is done" (end of time).

An input's watermark is the minimum over its partitions, and a partition not
heard from yet holds it at the beginning of time. So a test feeds
:func:`batch` es of events, :func:`progress` steps to move a watermark
without data, and :func:`finished` at the end of every partition::

    from bytewax.testing import TestingSource
    clicks = TestingSource([
        batch("clicks", [event("ann", 1_000), event("bob", 2_000)]),
        progress("clicks", 5_000),      # the clicks watermark reaches 5 s
        finished("clicks"),
    ])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from operators.records import DecodedBatch, Event, PartitionStatus

_offsets: dict[tuple[str, int], itertools.count[int]] = {}


def event(
    key: str,
    ts_ms: int,
    value: bytes = b"{}",
    *,
    topic: str = "clicks",
    partition: int = 0,
    offset: int | None = None,
) -> Event:
    """An event; without ``offset``, the next one of its (topic, partition)."""
    if offset is None:
        offset = next(_offsets.setdefault((topic, partition), itertools.count()))
    return Event(key, ts_ms, value, topic, partition, offset)


def batch(
    topic: str,
    events: Sequence[Event],
    *,
    partition: int = 0,
    partitions: int = 1,
    status: PartitionStatus = PartitionStatus.READING,
    polled_at_ms: int = 0,
) -> DecodedBatch:
    """One poll of ``topic``'s ``partition`` (of ``partitions``) that read ``events``."""
    max_ts = max((e.ts_ms for e in events), default=None)
    return DecodedBatch(topic, partition, partitions, list(events), max_ts, status, polled_at_ms)


def progress(topic: str, watermark_ms: int, *, partition: int = 0, partitions: int = 1) -> DecodedBatch:
    """A poll with no data after which the partition's watermark is ``watermark_ms``."""
    return DecodedBatch(topic, partition, partitions, [], watermark_ms + 1, PartitionStatus.READING, 0)


def finished(topic: str, *, partition: int = 0, partitions: int = 1) -> DecodedBatch:
    """The end of the partition (``KAFKA_TAIL=false``): its watermark is the end of time."""
    return batch(topic, [], partition=partition, partitions=partitions, status=PartitionStatus.FINISHED)
