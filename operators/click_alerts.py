"""``click_alerts``: per-user click-rate alerts over event-time sliding windows.

A user's clicks are counted in sliding windows of length ``window`` that start
every ``slide`` (aligned to the UTC epoch: window starts are multiples of
``slide``, and a click at ``t`` is in every window with
``start <= t < start + window``, i.e. ``window / slide`` windows).

Count shards (users spread by ``crc32(user_id)``, see
:mod:`operators.progress`) keep one count per (window, user) for open windows
only. A window closes when the clicks watermark reaches its end plus the
allowed lateness (the same rule as :func:`operators.event_time_shard.closed_through`,
on the slide grid); at close, every user with **more than** ``threshold``
clicks in it gets exactly one :class:`RateAlert`, and the window's counts are
freed. Each user lives in one shard, so no merge step is needed.

A click is *late* when at least one of its windows has already closed: it is
reported once as a :class:`~operators.records.LateClick` naming the earliest
window it missed, and it is still counted in those of its windows that are
open. Closed windows are never re-opened or emitted again.
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


class RateAlert(NamedTuple):
    """A user clicked more than the threshold in one window (epoch ms, end exclusive)."""

    key: str
    window_start_ms: int
    window_end_ms: int
    clicks: int


class SlidingWindowError(ValueError):
    """Window and slide break :func:`sliding_window_ms`'s rule.

    ``not_whole``: the fields (``"window"``, ``"slide"``) that are not whole
    milliseconds of at least 1 ms; when it is empty, the window is not a whole
    multiple of the slide.
    """

    def __init__(self, window_s: float, slide_s: float, not_whole: tuple[str, ...]):
        self.window_s, self.slide_s, self.not_whole = window_s, slide_s, not_whole
        if not_whole:
            text = (
                "window and slide must be at least 1 ms, in whole milliseconds "
                f"(got {window_s:g} s and {slide_s:g} s)"
            )
        else:
            text = (
                "window must be a whole multiple of slide "
                f"(got {round(window_s * 1000)} ms and {round(slide_s * 1000)} ms)"
            )
        super().__init__(text)


def sliding_window_ms(window_s: float, slide_s: float) -> tuple[int, int]:
    """(window ms, slide ms) of a sliding window given in seconds.

    The one rule, for the operator and for the alerts job's settings alike:
    both are whole milliseconds (to within 1e-6 ms of float error), at least
    1 ms, and the window is a whole multiple of the slide. Raises
    :class:`SlidingWindowError` (a ``ValueError``) otherwise.
    """
    not_whole = tuple(
        name
        for name, seconds in (("window", window_s), ("slide", slide_s))
        if round(seconds * 1000) < 1 or abs(seconds * 1000 - round(seconds * 1000)) > 1e-6
    )
    if not_whole:
        raise SlidingWindowError(window_s, slide_s, not_whole)
    window_ms, slide_ms = round(window_s * 1000), round(slide_s * 1000)
    if window_ms % slide_ms:
        raise SlidingWindowError(window_s, slide_s, ())
    return window_ms, slide_ms


class RateCountLogic(EventTimeShardLogic):
    """Count shard: clicks per user per open sliding window, alerts at close.

    State: ``counts`` maps a window's *end* to ``{user: clicks}``; ``ends`` is
    a heap of those ends, so closing pops only what closes. ``closed_ms``: every
    window ending at or before it is closed.
    """

    def __init__(self, window_ms: int, slide_ms: int, lateness_ms: int, threshold: int, state):
        super().__init__(None if state is None else state[0])
        self.window_ms = window_ms
        self.slide_ms = slide_ms
        self.lateness_ms = lateness_ms
        self.threshold = threshold
        if state is None:
            self.counts: dict[int, dict[str, int]] = {}
            self.closed_ms = BEGINNING_OF_TIME_MS
        else:
            self.counts = {end: dict(users) for end, users in state[1]}
            self.closed_ms = state[2]
        self.ends: list[int] = sorted(self.counts)  # a sorted list is a heap

    def add(self, click: Click, watermark: int, out: Emitted) -> None:
        ts = click.ts_ms
        slide = self.slide_ms
        # The click's windows end at first_end, first_end + slide, ..., last_end.
        last_end = ts - ts % slide + self.window_ms
        first_end = last_end - self.window_ms + slide
        closed = self.closed_ms
        if first_end <= closed:
            out.append((LATE, LateClick(click, first_end - self.window_ms, first_end, watermark)))
            # Count it only in the windows still open: those ending after `closed`.
            first_end = closed - closed % slide + slide
        counts = self.counts
        user = click.key
        for end in range(first_end, last_end + 1, slide):
            users = counts.get(end)
            if users is None:
                users = counts[end] = {}
                heapq.heappush(self.ends, end)
            users[user] = users.get(user, 0) + 1

    def close(self, watermark: int, out: Emitted) -> None:
        through = closed_through(watermark, self.slide_ms, self.lateness_ms)
        if through <= self.closed_ms:
            return
        self.closed_ms = through
        ends, counts = self.ends, self.counts
        threshold, window_ms = self.threshold, self.window_ms
        while ends and ends[0] <= through:
            end = heapq.heappop(ends)
            users = counts.pop(end)
            for user in sorted(u for u, n in users.items() if n > threshold):
                out.append((RESULT, RateAlert(user, end - window_ms, end, users[user])))

    def snapshot(self):
        # Immutable: recovery pickles it later, after more items may have arrived.
        return (
            self.clicks.snapshot(),
            tuple((end, tuple(users.items())) for end, users in self.counts.items()),
            self.closed_ms,
        )


@dataclass(frozen=True)
class ClickAlertsOut:
    """Alerts per closed window, and the clicks that arrived after a window of theirs closed."""

    alerts: Stream[list[RateAlert]]
    late: Stream[list[LateClick]]


@operator
def click_alerts(
    step_id: str,
    clicks: Stream[DecodedBatch],
    *,
    window: timedelta,
    slide: timedelta,
    threshold: int,
    lateness: timedelta,
    shards: int = 16,
) -> ClickAlertsOut:
    """Alert when a user has more than ``threshold`` clicks in a sliding ``window``.

    Example: windows of 10 s every 5 s, more than 2 clicks alerts. ann's
    clicks at 4, 6 and 8 s are 3 in [0 s, 10 s) (an alert) and 2 in
    [5 s, 15 s) (none):

    >>> from bytewax.dataflow import Dataflow
    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> from operators.testing import batch, event, finished
    >>> flow = Dataflow("alerts_example")
    >>> clicks = op.input("clicks", flow, TestingSource([
    ...     batch("clicks", [event("ann", 4_000), event("ann", 6_000), event("ann", 8_000),
    ...                      event("bob", 6_000)]),
    ...     finished("clicks")]))
    >>> out = click_alerts("alerts", clicks, window=timedelta(seconds=10),
    ...                    slide=timedelta(seconds=5), threshold=2, lateness=timedelta(0), shards=2)
    >>> alerts = []
    >>> op.output("out", out.alerts, TestingSink(alerts))
    >>> run_main(flow)
    >>> sorted(a for batch_ in alerts for a in batch_)
    [RateAlert(key='ann', window_start_ms=0, window_end_ms=10000, clicks=3)]
    """
    window_ms, slide_ms = sliding_window_ms(window.total_seconds(), slide.total_seconds())
    if threshold < 0 or shards < 1:
        raise ValueError("threshold must be >= 0 and shards >= 1")
    lateness_ms = round(lateness.total_seconds() * 1000)
    if lateness_ms < 0:
        raise ValueError("lateness must not be negative")
    counted = sharded_windows(
        "count",
        clicks,
        lambda state: RateCountLogic(window_ms, slide_ms, lateness_ms, threshold, state),
        shards,
    )
    return ClickAlertsOut(op.key_rm("alerts", counted.results), counted.late)
