"""``user_sessions``: per-user event-time session windows whose state is freed.

Bytewax's own session windows never free a key's state (upstream #577), so
this operator keeps sessions in shards driven by the global clicks watermark
(see :mod:`operators.event_time_shard`), like :mod:`operators.top_users`.

Semantics (``gap``, ``lateness``, watermark ``W`` of the clicks input)
------------------------------------------------------------------------
* **Sessions.** Per user, clicks whose consecutive event times are at most
  ``gap`` apart form one session; a gap strictly greater than ``gap`` starts a
  new one. A :class:`Session` reports its first and last click's event time
  and its click count. Clicks may arrive out of order: one that lands within
  ``gap`` of an open session extends it (backwards too), and one within
  ``gap`` of two open sessions merges them.
* **Closing.** A session closes when ``W >= end + gap + lateness`` (the end of
  input closes everything). It is emitted exactly once, then its state is
  freed. The user keeps only a *closed marker* ``(start, end)`` of the last
  closed session, and only while it is needed: it is dropped once
  ``W >= end + gap + gap + lateness``, so an idle user holds no state at all.
* **Late clicks.** A click that would belong to an already closed session is
  reported as a :class:`~operators.records.LateClick` and never re-opens or
  re-emits anything. It is late when, checked in this order:

  1. ``t <= end + gap`` of the user's closed marker: it would join (or bridge
     to) the closed session. Its window is ``[start, end + gap)`` of that
     session; if ``t < start - gap`` it belongs to an older closed session no
     longer remembered, and its window is ``[t, t + gap)``;
  2. otherwise, if ``t`` is at or after the start of the user's first open
     session, it is *not* late: it joins, extends or merges open sessions, or
     starts a new one between them (which cannot be closed yet: the open
     session before it ends after ``W - gap - lateness``). No closed session
     is within reach: every open session starts more than ``gap`` after the
     last closed one ended. (So a click far behind ``W`` that falls inside a
     long open session counts, as in Flink's merging windows.)
  3. otherwise (the user has no open session, or ``t`` is before the first
     one) it is late when ``t + gap + lateness <= W``: the session it would
     start or join would already be closed, and once a marker is dropped this
     rule covers every click that marker covered. Its window is
     ``[t, t + gap)``.

Closing is cheap: a heap of ``(close time, user)`` with lazy invalidation.
``due`` names each user's one valid entry, which may be earlier than the
user's real close time (sessions grow without touching the heap): when it
pops, whatever is due closes and the user is pushed again at its next close
time. A new entry is pushed only when a user's earliest close time moves
earlier (the one it supersedes is skipped when it pops). A second heap expires
markers. Nothing is scheduled on the system clock.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from dataclasses import dataclass
from datetime import timedelta
from operator import itemgetter
from typing import NamedTuple

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from operators.event_time_shard import LATE, RESULT, Emitted, EventTimeShardLogic, sharded_windows
from operators.records import Click, DecodedBatch, LateClick


class Session(NamedTuple):
    """One closed session of one user: first and last click's event time (epoch ms)."""

    key: str
    start_ms: int
    end_ms: int
    clicks: int


class SessionsState(NamedTuple):
    """What a shard snapshots for recovery: immutable copies only."""

    clicks_progress: tuple
    #: (user, ((start, end, clicks), ...)) per user with open sessions, sorted by start.
    open: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]
    #: (user, start, end) of each user's last closed session still needed.
    markers: tuple[tuple[str, int, int], ...]


_start = itemgetter(0)


class SessionsLogic(EventTimeShardLogic):
    """One shard of the sessions operator: open sessions and closed markers per user."""

    def __init__(self, gap_ms: int, lateness_ms: int, state: SessionsState | None):
        super().__init__(None if state is None else _thaw_progress(state.clicks_progress))
        self.gap_ms = gap_ms
        self.lateness_ms = lateness_ms
        #: user -> open sessions [start, end, clicks], sorted by start, more than gap apart.
        self.open: dict[str, list[list[int]]] = {}
        #: user -> (start, end) of the last closed session, kept while needed.
        self.markers: dict[str, tuple[int, int]] = {}
        #: user -> the close time of the user's one valid entry in ``close_heap``
        #: (never later than the user's earliest session's close time).
        self.due: dict[str, int] = {}
        self.close_heap: list[tuple[int, str]] = []
        self.marker_heap: list[tuple[int, str]] = []
        if state is not None:
            for user, sessions in state.open:
                self.open[user] = [list(s) for s in sessions]
                self._schedule(user, sessions[0][1] + gap_ms + lateness_ms)
            for user, start, end in state.markers:
                self.markers[user] = (start, end)
                heapq.heappush(self.marker_heap, (self._marker_expiry(end), user))

    # -- EventTimeShardLogic ----------------------------------------------
    def add(self, click: Click, watermark: int, out: Emitted) -> None:
        t = click.ts_ms
        user = click.key
        gap = self.gap_ms
        marker = self.markers.get(user)
        if marker is not None and t <= marker[1] + gap:
            if t >= marker[0] - gap:
                out.append((LATE, LateClick(click, marker[0], marker[1] + gap, watermark)))
            else:
                out.append((LATE, LateClick(click, t, t + gap, watermark)))
            return
        sessions = self.open.get(user)
        if sessions is None:
            if t + gap + self.lateness_ms <= watermark:
                out.append((LATE, LateClick(click, t, t + gap, watermark)))
                return
            self.open[user] = [[t, t, 1]]
            self._schedule(user, t + gap + self.lateness_ms)
            return
        i = bisect_right(sessions, t, key=_start)  # sessions[:i] start at or before t
        prev = sessions[i - 1] if i > 0 and t <= sessions[i - 1][1] + gap else None
        nxt = sessions[i] if i < len(sessions) and sessions[i][0] - gap <= t else None
        # At or after the first open session's start (i > 0) a click is never
        # late: the open session before it ends after W - gap - lateness.
        if prev is not None:
            if nxt is not None:  # bridges two open sessions: merge them
                prev[1] = nxt[1]
                prev[2] += nxt[2] + 1
                del sessions[i]
            else:
                if t > prev[1]:
                    prev[1] = t
                prev[2] += 1
            return  # the earliest close time did not move earlier
        if i == 0 and t + gap + self.lateness_ms <= watermark:
            # Before the user's open sessions: it could only reach a closed one.
            out.append((LATE, LateClick(click, t, t + gap, watermark)))
            return
        if nxt is not None:
            nxt[0] = t
            nxt[2] += 1
        else:
            sessions.insert(i, [t, t, 1])
        self._schedule(user, sessions[0][1] + gap + self.lateness_ms)

    def close(self, watermark: int, out: Emitted) -> None:
        heap = self.close_heap
        due = self.due
        open_ = self.open
        span = self.gap_ms + self.lateness_ms
        while heap and heap[0][0] <= watermark:
            at, user = heapq.heappop(heap)
            if due.get(user) != at:
                continue  # stale: superseded by an earlier entry for this user
            del due[user]
            sessions = open_[user]
            n = 0
            while n < len(sessions) and sessions[n][1] + span <= watermark:
                start, end, clicks = sessions[n]
                out.append((RESULT, Session(user, start, end, clicks)))
                n += 1
            if n:
                last = sessions[n - 1]
                self._set_marker(user, last[0], last[1], watermark)
                del sessions[:n]
            if sessions:
                self._schedule(user, sessions[0][1] + span)
            else:
                del open_[user]
        markers = self.markers
        marker_heap = self.marker_heap
        while marker_heap and marker_heap[0][0] <= watermark:
            at, user = heapq.heappop(marker_heap)
            marker = markers.get(user)
            if marker is not None and self._marker_expiry(marker[1]) == at:
                del markers[user]

    # -- helpers ----------------------------------------------------------
    def _schedule(self, user: str, close_at: int) -> None:
        """Make sure the heap holds an entry for ``user`` no later than ``close_at``."""
        current = self.due.get(user)
        if current is None or close_at < current:
            self.due[user] = close_at
            heapq.heappush(self.close_heap, (close_at, user))

    def _marker_expiry(self, end: int) -> int:
        return end + 2 * self.gap_ms + self.lateness_ms

    def _set_marker(self, user: str, start: int, end: int, watermark: int) -> None:
        expiry = self._marker_expiry(end)
        if expiry <= watermark:
            # Already covered by the "t + gap + lateness <= W" rule.
            self.markers.pop(user, None)
            return
        self.markers[user] = (start, end)
        heapq.heappush(self.marker_heap, (expiry, user))

    def state_size(self) -> tuple[int, int, int]:
        """(users with open sessions, open sessions, closed markers) held by this shard."""
        return (len(self.open), sum(len(s) for s in self.open.values()), len(self.markers))

    def snapshot(self) -> SessionsState:
        progress, count = self.clicks.snapshot()
        return SessionsState(
            (tuple(progress.items()), count),
            tuple((user, tuple(tuple(s) for s in sessions)) for user, sessions in self.open.items()),
            tuple((user, start, end) for user, (start, end) in self.markers.items()),
        )


def _thaw_progress(progress: tuple) -> tuple:
    partitions, count = progress
    return (dict(partitions), count)


@dataclass(frozen=True)
class UserSessionsOut:
    """Closed sessions, and the clicks that arrived after their session closed."""

    sessions: Stream[list[Session]]
    late: Stream[list[LateClick]]


@operator
def user_sessions(
    step_id: str,
    clicks: Stream[DecodedBatch],
    *,
    gap: timedelta,
    lateness: timedelta,
    shards: int = 16,
) -> UserSessionsOut:
    """Per-user session windows of event time; see the module docstring.

    Example: a gap of more than 5 s starts a new session:

    >>> from bytewax.dataflow import Dataflow
    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> from operators.testing import batch, event, finished
    >>> flow = Dataflow("sessions_example")
    >>> clicks = op.input("clicks", flow, TestingSource([
    ...     batch("clicks", [event("ann", at) for at in (1_000, 4_000, 9_000, 15_000)]),
    ...     finished("clicks")]))
    >>> out = user_sessions("sessions", clicks, gap=timedelta(seconds=5),
    ...                     lateness=timedelta(0), shards=2)
    >>> sessions = []
    >>> op.output("out", out.sessions, TestingSink(sessions))
    >>> run_main(flow)
    >>> [s for ss in sessions for s in ss]  # doctest: +NORMALIZE_WHITESPACE
    [Session(key='ann', start_ms=1000, end_ms=9000, clicks=3),
     Session(key='ann', start_ms=15000, end_ms=15000, clicks=1)]
    """
    if shards < 1:
        raise ValueError("shards must be >= 1")
    gap_ms = int(gap.total_seconds() * 1000)
    lateness_ms = int(lateness.total_seconds() * 1000)
    if gap_ms < 1:
        raise ValueError("gap must be at least 1 ms")
    if lateness_ms < 0:
        raise ValueError("lateness must not be negative")
    out = sharded_windows("sessions", clicks, lambda state: SessionsLogic(gap_ms, lateness_ms, state), shards)
    return UserSessionsOut(op.key_rm("closed", out.results), out.late)
