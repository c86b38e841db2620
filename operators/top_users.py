"""``top_users``: the global top-N users by clicks per event-time tumbling window.

Two stages, so the result is global (not per worker) and exact:

1. *Count* shards (users spread by ``crc32(user_id)``) count clicks per user
   per window. When the clicks watermark passes a window's end plus the
   lateness, a shard reports its local top-N of each window it closed,
   together with how far it has closed ("closed through E").
2. One *merge* step collects the reports. A window is final once every shard
   has closed through its end; it is emitted then, exactly once. Each user
   lives in one shard, so the global top-N is among the shards' top-Ns.

Ordering: clicks descending, then user id ascending (the same in both stages,
which is what makes the merge exact). Windows are aligned to the UTC epoch.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from operators.event_time_shard import (
    LATE,
    RESULT,
    Emitted,
    EventTimeShardLogic,
    closed_through,
    sharded_windows,
)
from operators.records import BEGINNING_OF_TIME_MS, Click, DecodedBatch, LateClick

Ranking = list[tuple[str, int]]


class WindowTop(NamedTuple):
    """The top users of one window."""

    window_start_ms: int
    window_end_ms: int
    #: (user_id, clicks), clicks descending then user id ascending.
    top: Ranking


class ShardReport(NamedTuple):
    """A count shard's local top-N of the windows it just closed."""

    shard: str
    closed_through_ms: int
    windows: dict[int, Ranking]


def rank(counts: dict[str, int], n: int) -> Ranking:
    """Top ``n`` of ``counts``: clicks descending, then user id ascending."""
    return heapq.nsmallest(n, counts.items(), key=lambda kv: (-kv[1], kv[0]))


class WindowCountLogic(EventTimeShardLogic):
    """Count shard: clicks per user per open window."""

    def __init__(self, window_ms: int, lateness_ms: int, top_n: int, state):
        super().__init__(None if state is None else state[0])
        self.window_ms = window_ms
        self.lateness_ms = lateness_ms
        self.top_n = top_n
        if state is None:
            self.counts: dict[int, dict[str, int]] = {}
            self.closed_ms = BEGINNING_OF_TIME_MS
        else:
            self.counts = {ws: dict(users) for ws, users in state[1].items()}
            self.closed_ms = state[2]

    def add(self, click: Click, watermark: int, out: Emitted) -> None:
        start = click.ts_ms - click.ts_ms % self.window_ms
        end = start + self.window_ms
        if end <= self.closed_ms:
            out.append((LATE, LateClick(click, start, end, watermark)))
            return
        users = self.counts.get(start)
        if users is None:
            users = self.counts[start] = {}
        users[click.key] = users.get(click.key, 0) + 1

    def close(self, watermark: int, out: Emitted) -> None:
        through = closed_through(watermark, self.window_ms, self.lateness_ms)
        if through <= self.closed_ms:
            return
        self.closed_ms = through
        done = [start for start in self.counts if start + self.window_ms <= through]
        windows = {start: rank(self.counts.pop(start), self.top_n) for start in sorted(done)}
        # The shard's name is filled in downstream (`_named_reports`), where the key is known.
        out.append((RESULT, ShardReport("", through, windows)))

    def snapshot(self):
        return (
            self.clicks.snapshot(),
            {ws: dict(users) for ws, users in self.counts.items()},
            self.closed_ms,
        )


class TopMergeLogic(op.StatefulBatchLogic):
    """Merge step: a window is emitted once every shard has closed past it."""

    def __init__(self, shards: int, window_ms: int, top_n: int, state):
        self.shards = shards
        self.window_ms = window_ms
        self.top_n = top_n
        if state is None:
            self.closed: dict[str, int] = {}
            self.partial: dict[int, Ranking] = {}
        else:
            self.closed = dict(state[0])
            self.partial = {ws: list(r) for ws, r in state[1].items()}

    def on_batch(self, reports: list[ShardReport]):
        for report in reports:
            self.closed[report.shard] = max(
                report.closed_through_ms, self.closed.get(report.shard, BEGINNING_OF_TIME_MS)
            )
            for start, ranking in report.windows.items():
                self.partial.setdefault(start, []).extend(ranking)
        if len(self.closed) < self.shards:
            return [], False
        through = min(self.closed.values())
        final = sorted(start for start in self.partial if start + self.window_ms <= through)
        out = []
        for start in final:
            merged: dict[str, int] = {}
            for user, clicks in self.partial.pop(start):
                merged[user] = merged.get(user, 0) + clicks
            out.append(WindowTop(start, start + self.window_ms, rank(merged, self.top_n)))
        return ([out] if out else []), False

    def snapshot(self):
        return (dict(self.closed), {ws: list(r) for ws, r in self.partial.items()})


@dataclass(frozen=True)
class TopUsersOut:
    """Per-window top lists, and the clicks that arrived after their window closed."""

    windows: Stream[list[WindowTop]]
    late: Stream[list[LateClick]]


@operator
def top_users(
    step_id: str,
    clicks: Stream[DecodedBatch],
    *,
    window: timedelta,
    lateness: timedelta,
    top_n: int,
    shards: int = 16,
) -> TopUsersOut:
    """Global top ``top_n`` users per tumbling ``window`` of event time.

    Example: windows of 10 s, the top 2 of each; a window comes out once,
    when the clicks watermark passes its end plus the lateness (here: at the
    end of input):

    >>> from bytewax.dataflow import Dataflow
    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> from operators.testing import batch, event, finished
    >>> flow = Dataflow("top_example")
    >>> clicks = op.input("clicks", flow, TestingSource([
    ...     batch("clicks", [event(u, at) for u, at in
    ...                      [("ann", 1_000), ("bob", 2_000), ("ann", 3_000), ("cat", 4_000),
    ...                       ("bob", 5_000), ("ann", 9_999), ("cat", 12_000)]]),
    ...     finished("clicks")]))
    >>> out = top_users("top", clicks, window=timedelta(seconds=10),
    ...                 lateness=timedelta(0), top_n=2, shards=2)
    >>> windows = []
    >>> op.output("out", out.windows, TestingSink(windows))
    >>> run_main(flow)
    >>> [w for ws in windows for w in ws]  # doctest: +NORMALIZE_WHITESPACE
    [WindowTop(window_start_ms=0, window_end_ms=10000, top=[('ann', 3), ('bob', 2)]),
     WindowTop(window_start_ms=10000, window_end_ms=20000, top=[('cat', 1)])]
    """
    if top_n < 1 or shards < 1:
        raise ValueError("top_n and shards must be >= 1")
    window_ms = int(window.total_seconds() * 1000)
    lateness_ms = int(lateness.total_seconds() * 1000)
    if window_ms < 1:
        raise ValueError("window must be at least 1 ms")
    counted = sharded_windows(
        "count",
        clicks,
        lambda state: WindowCountLogic(window_ms, lateness_ms, top_n, state),
        shards,
    )
    reports = op.flat_map("reports", counted.results, _named_reports)
    merged = op.stateful_batch(
        "merge",
        op.key_on("to_merger", reports, lambda _: "top"),
        lambda state: TopMergeLogic(shards, window_ms, top_n, state),
    )
    return TopUsersOut(op.key_rm("unkey_windows", merged), counted.late)


def _named_reports(keyed: tuple[str, list[ShardReport]]) -> list[ShardReport]:
    """The shard's reports with its name filled in (the logic does not know its key)."""
    shard, reports = keyed
    return [r._replace(shard=shard) for r in reports]
