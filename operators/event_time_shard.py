"""A base for windowed stateful logic on the clicks input, driven by a global watermark.

Bytewax's windowing keeps a clock per key: a key's watermark only moves when
that key gets data, closed windows re-open when very late data arrives and
are emitted twice, and event times far in the past make its wake-ups always
overdue so the worker spins (upstream #578). The windowed jobs of this package
avoid all three by keeping their state in shards (see
:mod:`operators.progress`) and closing windows from the *input's* watermark:

* windows close when the clicks watermark passes their end plus the allowed
  lateness, whether or not their own key gets more data;
* a click whose window is already closed is reported as a
  :class:`~operators.records.LateClick` and never re-opens anything;
* nothing is scheduled on the system clock (no ``notify_at``), so backfill
  cannot spin; an idle tailing input still advances the watermark through the
  source's heartbeat (its wall clock while caught up).

Subclasses implement :meth:`add` (one click, not late) and :meth:`close`
(everything that the watermark has closed), and their own state snapshot;
:func:`sharded_windows` is the set-up every windowed operator shares: route
the clicks batches to the shards, run one such logic per shard, split what
the shards emit into results and late clicks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream

from operators.progress import CLICKS, InputProgress, ShardInput, ShardRouter
from operators.records import END_OF_TIME_MS, Click, DecodedBatch, LateClick

#: Tags of what a shard emits: results of the subclass, and late clicks.
RESULT = 0
LATE = 1

Emitted = list[tuple[int, Any]]


def closed_through(watermark: int, window_ms: int, lateness_ms: int) -> int:
    """End of the last window closed at ``watermark``: every window ending at or before it."""
    if watermark >= END_OF_TIME_MS:
        return END_OF_TIME_MS
    limit = watermark - lateness_ms
    return limit - limit % window_ms


class EventTimeShardLogic(op.StatefulBatchLogic):
    """One shard of a windowed job: feed clicks, close by the clicks watermark."""

    def __init__(self, progress_state: tuple | None):
        self.clicks = InputProgress(progress_state)

    # -- to implement ----------------------------------------------------
    def add(self, click: Click, watermark: int, out: Emitted) -> None:
        """Take one click; append ``(LATE, LateClick)`` to ``out`` if it is late."""
        raise NotImplementedError

    def close(self, watermark: int, out: Emitted) -> None:
        """Emit ``(RESULT, ...)`` for everything ``watermark`` closes and free it."""
        raise NotImplementedError

    # -- Bytewax callbacks ------------------------------------------------
    def on_batch(self, values: list[ShardInput]):
        out: Emitted = []
        clicks = self.clicks
        for inp in values:
            watermark = clicks.watermark
            for click in inp.items:
                self.add(click, watermark, out)
            before = watermark
            if clicks.update(inp) != before:
                self.close(clicks.watermark, out)
        return ([out] if out else []), False

    def on_eof(self):
        # The input ended on this execution: with KAFKA_TAIL=false every
        # partition reported FINISHED already; close everything regardless.
        out: Emitted = []
        self.close(END_OF_TIME_MS, out)
        return ([out] if out else []), False


@dataclass(frozen=True)
class ShardedWindowsOut:
    """What the shards of :func:`sharded_windows` emitted, per shard activation."""

    #: (shard key, the non-empty list of results of one activation).
    results: Stream[tuple[str, list]]
    late: Stream[list[LateClick]]


def sharded_windows(
    step_id: str,
    clicks: Stream[DecodedBatch],
    logic_builder: Callable[[Any | None], EventTimeShardLogic],
    shards: int,
) -> ShardedWindowsOut:
    """Route ``clicks`` batches to ``shards`` state shards, run one
    :class:`EventTimeShardLogic` per shard (``logic_builder(resume_state)``),
    and split what the shards emit into results and late clicks.

    ``step_id`` names the stateful step. This is a plain function, not a
    Bytewax ``@operator``: its steps (``route``, ``step_id``, ``split``,
    ``results``, ``late``) are created in the calling operator's scope, so
    the stateful step keeps the id ``<operator>.<step_id>`` under which
    recovery stores hold its state.
    """
    if shards < 1:
        raise ValueError("shards must be >= 1")
    router = ShardRouter(CLICKS, shards)
    keyed = op.flat_map("route", clicks, router.route)
    emitted = op.stateful_batch(step_id, keyed, logic_builder)
    split = op.map("split", emitted, _split_keyed)
    results = op.filter_map("results", split, _results_of)
    late = op.filter_map("late", split, _late_of)
    return ShardedWindowsOut(results, late)


def _split_keyed(keyed: tuple[str, Emitted]) -> tuple[str, list, list]:
    """(shard, results, late clicks) of one shard activation."""
    shard, emitted = keyed
    results = [item for tag, item in emitted if tag == RESULT]
    late = [item for tag, item in emitted if tag == LATE]
    return shard, results, late


def _results_of(split: tuple[str, list, list]) -> tuple[str, list] | None:
    return (split[0], split[1]) if split[1] else None


def _late_of(split: tuple[str, list, list]) -> list | None:
    return split[2] or None
