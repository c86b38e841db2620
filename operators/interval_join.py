"""``interval_join``: pair each left event with the right events of the same key
within an interval around its time ("the past 5 s or the next 5 s").

Semantics
---------
A right event at time ``V`` matches a left event at time ``T`` when
``T - before <= V <= T + after`` (bounds included; either may be 0). Every
matching pair is emitted as soon as both events are there, whichever came
first, as ``JoinResult(left, right)``: no waiting, and one result per pair.

With ``how="left"`` (or ``"outer"``) a left event that matched nothing is
emitted once as ``JoinResult(left, None)``, when nothing can match it any
more: the right watermark has passed ``T + after + lateness``, or it has
waited ``wait`` of processing time, or at end of input. Never a spurious
"unmatched" followed by a match: once emitted unmatched, the event leaves the
state, and a right event read later does not revise it (as in the as-of
join). ``how="right"`` / ``"outer"`` do the same for right events with
``JoinResult(None, right)`` (the left watermark passing ``V + before +
lateness``).

Late events: a left event more than ``lateness`` behind the left watermark
(``T < left watermark - lateness``) may have lost right events that were
already evicted, so it is not joined: it comes out on ``late`` (as a
:class:`LateClick` whose window is its match interval). The same for right
events against the right watermark.

State: a left event is kept until the right watermark passes ``T + after +
lateness``, a right event until the left watermark passes ``V + before +
lateness``; so a shard holds about rate x (before + after + lateness) events
of each side. Watermarks are global per input (see :mod:`operators.progress`):
state lives in shards like the as-of join's.
"""

from __future__ import annotations

import heapq
import pickle
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream, operator  # noqa: F401 - Dataflow: the docstring example

from operators.metrics import STATE_SIZE
from operators.progress import CLICKS, PROFILES, InputProgress, ShardInput, ShardRouter
from operators.records import END_OF_TIME_MS, DecodedBatch, Event, JoinResult, LateClick, new_join_result

HOWS = ("inner", "left", "right", "outer")
LEFT, RIGHT = CLICKS, PROFILES
STATE_EVENTS = STATE_SIZE.labels("interval_join_events", "all")

#: One stored event: [event, matched yet]. A list so the flag can change.
Entry = list
#: A key with no stored events (shared, never written to).
_NONE: dict[int, Entry] = {}


class IntervalJoinState(NamedTuple):
    """What a shard snapshots: both sides' stored events and the progress."""

    events: bytes  # pickled (left by key, right by key, seq)
    left_progress: tuple
    right_progress: tuple


class _Side:
    """One side's stored events: by key, by expiry threshold and by deadline."""

    def __init__(self, by_key: dict[str, dict[int, Entry]] | None = None):
        self.by_key: dict[str, dict[int, Entry]] = by_key or {}
        #: (threshold, seq, key): the event leaves when the other watermark passes it.
        self.expiry: list[tuple[int, int, str]] = []
        #: (deadline, seq, key) of events not yet matched (the wait cap).
        self.deadlines: deque[tuple[float, int, str]] = deque()
        self.size = 0

    def add(self, seq: int, entry: Entry, threshold: int, deadline: float | None) -> None:
        key = entry[0].key
        self.by_key.setdefault(key, {})[seq] = entry
        heapq.heappush(self.expiry, (threshold, seq, key))
        if deadline is not None and not entry[1]:
            self.deadlines.append((deadline, seq, key))
        self.size += 1

    def pop(self, seq: int, key: str) -> Entry | None:
        entries = self.by_key.get(key)
        if entries is None:
            return None
        entry = entries.pop(seq, None)
        if entry is not None:
            self.size -= 1
            if not entries:
                del self.by_key[key]
        return entry


class IntervalJoinLogic(op.StatefulBatchLogic):
    """One shard of the interval join."""

    def __init__(
        self,
        before_ms: int,
        after_ms: int,
        lateness_ms: int,
        wait_s: float,
        how: str,
        state: IntervalJoinState | None,
    ):
        self.before, self.after, self.lateness, self.wait_s = before_ms, after_ms, lateness_ms, wait_s
        self.emit_left = how in ("left", "outer")
        self.emit_right = how in ("right", "outer")
        if state is None:
            self.left, self.right, self.seq = _Side(), _Side(), 0
            self.progress = (InputProgress(), InputProgress())
        else:
            left, right, self.seq = pickle.loads(state.events)
            self.left, self.right = _Side(left), _Side(right)
            self.progress = (InputProgress(state.left_progress), InputProgress(state.right_progress))
            self._rebuild()
        self._reported = 0

    def _threshold(self, side: int, ts_ms: int) -> int:
        return ts_ms + (self.after if side == LEFT else self.before) + self.lateness

    def _rebuild(self) -> None:
        """Expiry and deadlines after a restore (waits restart from now)."""
        deadline = time.time() + self.wait_s
        for side, store in ((LEFT, self.left), (RIGHT, self.right)):
            for key, entries in store.by_key.items():
                for seq, entry in entries.items():
                    store.expiry.append((self._threshold(side, entry[0].ts_ms), seq, key))
                    if not entry[1]:
                        store.deadlines.append((deadline, seq, key))
                    store.size += 1
            heapq.heapify(store.expiry)

    def _arrive(self, side: int, event: Event, deadline: float, out: list, late: list) -> None:
        own_wm = self.progress[side].watermark
        other_wm = self.progress[1 - side].watermark
        ts = event.ts_ms
        # the other side's times this event matches (a left event's interval,
        # or the left times whose interval holds this right event)
        if side == LEFT:
            low, high = ts - self.before, ts + self.after
        else:
            low, high = ts - self.after, ts + self.before
        if own_wm < END_OF_TIME_MS and ts < own_wm - self.lateness:
            late.append(LateClick(event, low, high, own_wm))
            return
        other = self.right if side == LEFT else self.left
        matched = False
        for entry in other.by_key.get(event.key, _NONE).values():
            if low <= entry[0].ts_ms <= high:
                matched = True
                entry[1] = True
                out.append(new_join_result((event, entry[0]) if side == LEFT else (entry[0], event)))
        threshold = self._threshold(side, ts)
        if other_wm > threshold:  # nothing more can match it: resolved now
            if not matched:
                self._unmatched(side, event, out)
            return
        store = self.left if side == LEFT else self.right
        emits = self.emit_left if side == LEFT else self.emit_right
        self.seq += 1
        store.add(self.seq, [event, matched], threshold, deadline if emits else None)

    def _unmatched(self, side: int, event: Event, out: list) -> None:
        if side == LEFT and self.emit_left:
            out.append(new_join_result((event, None)))
        elif side == RIGHT and self.emit_right:
            # A right event with no left match (how="right"/"outer"); JoinResult's
            # fields are typed for the click/profile join, where the click is never None.
            out.append(new_join_result((None, event)))

    def _expire(self, out: list) -> None:
        for side, store in ((LEFT, self.left), (RIGHT, self.right)):
            other_wm = self.progress[1 - side].watermark
            expiry = store.expiry
            while expiry and expiry[0][0] < other_wm:
                _, seq, key = heapq.heappop(expiry)
                entry = store.pop(seq, key)
                if entry is not None and not entry[1]:
                    self._unmatched(side, entry[0], out)

    def on_batch(self, values: list[ShardInput]):
        out: list = []
        late: list = []
        deadline = time.time() + self.wait_s
        for inp in values:
            side = LEFT if inp.side == CLICKS else RIGHT
            for event in inp.items:
                self._arrive(side, event, deadline, out, late)
            self.progress[side].update(inp)
        self._expire(out)
        return self._emit(out, late), False

    def on_notify(self):
        out: list = []
        now = time.time()
        for side, store in ((LEFT, self.left), (RIGHT, self.right)):
            deadlines = store.deadlines
            while deadlines and deadlines[0][0] <= now:
                _, seq, key = deadlines.popleft()
                entry = store.by_key.get(key, {}).get(seq)
                if entry is not None and not entry[1]:
                    store.pop(seq, key)
                    self._unmatched(side, entry[0], out)
        self._expire(out)
        return self._emit(out, []), False

    def on_eof(self):
        out: list = []
        for side, store in ((LEFT, self.left), (RIGHT, self.right)):
            for entries in store.by_key.values():
                for event, matched in entries.values():
                    if not matched:
                        self._unmatched(side, event, out)
            store.by_key.clear()
            store.expiry.clear()
            store.deadlines.clear()
            store.size = 0
        return self._emit(out, []), False

    def notify_at(self) -> datetime | None:
        earliest = None
        for store in (self.left, self.right):
            deadlines = store.deadlines
            while deadlines and store.by_key.get(deadlines[0][2], {}).get(deadlines[0][1], [None, True])[1]:
                deadlines.popleft()  # matched or gone: no wait any more
            if deadlines and (earliest is None or deadlines[0][0] < earliest):
                earliest = deadlines[0][0]
        return None if earliest is None else datetime.fromtimestamp(earliest, tz=UTC)

    def _emit(self, out: list, late: list) -> list:
        size = self.left.size + self.right.size
        if size != self._reported:
            STATE_EVENTS.inc(size - self._reported)
            self._reported = size
        return [(out, late)] if out or late else []

    def snapshot(self) -> IntervalJoinState:
        events = pickle.dumps((self.left.by_key, self.right.by_key, self.seq), pickle.HIGHEST_PROTOCOL)
        return IntervalJoinState(events, self.progress[0].snapshot(), self.progress[1].snapshot())

    def state_size(self) -> tuple[int, int]:
        """(left events, right events) held by this shard."""
        return self.left.size, self.right.size


@dataclass(frozen=True)
class IntervalJoinOut:
    """Pairs and unmatched events (lists, one per shard activation), and late events."""

    joined: Stream[list[JoinResult]]
    late: Stream[list[LateClick]]


@operator
def interval_join(
    step_id: str,
    left: Stream[DecodedBatch],
    right: Stream[DecodedBatch],
    *,
    before: timedelta,
    after: timedelta,
    lateness: timedelta,
    wait: timedelta,
    how: str = "inner",
    shards: int = 16,
    progress_interval: timedelta = timedelta(milliseconds=100),
    live_interval: timedelta = timedelta(milliseconds=20),
) -> IntervalJoinOut:
    """Join each left event with the right events of its key in
    ``[T - before, T + after]``; see the module docstring for the rules.

    :arg how: ``inner``, ``left``, ``right`` or ``outer``: which unmatched
        events are emitted (with ``None`` on the other side).
    :arg lateness: how far behind its own watermark an event may arrive and
        still be joined; also how long state is kept past the interval.
    :arg wait: processing time an unmatched event waits for the other side's
        watermark before it is emitted unmatched.
    :arg shards: number of state shards; keep it fixed for a recovery store.

    Example: ann's click at 10 s meets her versions within [8 s, 11 s]; bob's
    click meets none and, with ``how="left"``, comes out alone:

    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> from operators.testing import batch, event, finished
    >>> flow = Dataflow("interval_example")
    >>> clicks = op.input("clicks", flow, TestingSource([
    ...     batch("clicks", [event("ann", 10_000), event("bob", 10_000)]), finished("clicks")]))
    >>> versions = [event("ann", at, topic="profiles") for at in (7_999, 8_000, 11_000, 11_001)]
    >>> profiles = op.input("profiles", flow, TestingSource([
    ...     batch("profiles", versions), finished("profiles")]))
    >>> out = interval_join("join", clicks, profiles, before=timedelta(seconds=2),
    ...                     after=timedelta(seconds=1), lateness=timedelta(0),
    ...                     wait=timedelta(seconds=10), how="left", shards=2)
    >>> pairs = []
    >>> op.output("out", out.joined, TestingSink(pairs))
    >>> run_main(flow)
    >>> sorted((r.click.key, r.profile and r.profile.ts_ms) for rs in pairs for r in rs)
    [('ann', 8000), ('ann', 11000), ('bob', None)]
    """
    if how not in HOWS:
        raise ValueError(f"how must be one of {HOWS}, got {how!r}")
    if before < timedelta(0) or after < timedelta(0) or lateness < timedelta(0):
        raise ValueError("before, after and lateness must not be negative")
    if shards < 1:
        raise ValueError("shards must be >= 1")
    interval_s = progress_interval.total_seconds()
    left_router = ShardRouter(CLICKS, shards, interval_s, live_interval.total_seconds())
    right_router = ShardRouter(PROFILES, shards, interval_s, live_interval.total_seconds())
    keyed = op.merge(
        "merge",
        op.flat_map("route_left", left, left_router.route),
        op.flat_map("route_right", right, right_router.route),
    )
    ms = lambda d: round(d.total_seconds() * 1000)  # noqa: E731
    before_ms, after_ms, lateness_ms, wait_s = ms(before), ms(after), ms(lateness), wait.total_seconds()
    both = op.stateful_batch(
        "shards",
        keyed,
        lambda state: IntervalJoinLogic(before_ms, after_ms, lateness_ms, wait_s, how, state),
    )
    unkeyed = op.key_rm("unkey", both)
    joined = op.filter_map("joined", unkeyed, lambda pair: pair[0] or None)
    late = op.filter_map("late", unkeyed, lambda pair: pair[1] or None)
    return IntervalJoinOut(joined, late)
