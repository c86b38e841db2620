"""Health that means progress: is the job reading input but completing no epoch?

A process can answer HTTP while its dataflow is stuck (a peer stopped, a
broker that accepts connections but never answers). :data:`PROGRESS` is the
process-wide record the source keeps at almost no cost (a float per poll,
a set update when a partition starts or stops reading, a float per epoch);
:class:`StallMonitor` turns it into healthy / stalled, logging one line when
that changes. Bytewax gates its inputs on the downstream progress of the
whole cluster: while any worker downstream is stuck, the sources are neither
polled nor snapshotted (their per-epoch ``snapshot()`` is the epoch signal).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class ProgressWatch:
    """When this process last completed an epoch and last read input."""

    def __init__(self, now: float | None = None):
        #: The start counts as progress: a job gets ``stall_s`` to complete its first epoch.
        self.epoch_at = time.monotonic() if now is None else now
        #: When records were last read (the source sets it once per batch with records).
        self.input_at = float("-inf")
        #: When a source partition was last polled (every poll, records or not).
        self.polled_at = self.epoch_at
        #: Partitions whose last poll returned records (not caught up).
        self.reading: set[tuple[str, int]] = set()
        #: The source partitions this process reads (none: no signal, never stalled).
        self.partitions: set[tuple[str, int]] = set()

    def open_partition(self, partition: tuple[str, int], now: float | None = None) -> None:
        """A partition starts (behind its end until a poll says otherwise). The
        first one restarts the clocks: start-up before it is not a stall."""
        if not self.partitions:
            self.epoch_at = self.polled_at = time.monotonic() if now is None else now
        self.partitions.add(partition)
        self.reading.add(partition)

    def close_partition(self, partition: tuple[str, int]) -> None:
        self.partitions.discard(partition)
        self.reading.discard(partition)

    def set_reading(self, partition: tuple[str, int], reading: bool) -> None:
        if reading:
            self.reading.add(partition)
        else:
            self.reading.discard(partition)

    def input_pending(self, now: float, unpolled_s: float) -> str | None:
        """Why input is pending that no completed epoch covers (None: it is not):
        a partition behind its end, records read since the last epoch completed,
        or sources not polled for ``unpolled_s`` (a gated or stuck worker cannot
        see its input). A process that reads no partition has no signal: None."""
        if not self.partitions:
            return None
        if self.reading:
            names = ", ".join(sorted(f"{t}[{p}]" for t, p in list(self.reading)[:3]))
            return f"{len(self.reading)} partition(s) behind their end ({names})"
        if self.input_at > self.epoch_at:
            return "records read since the last epoch"
        if now - self.polled_at >= unpolled_s:
            return f"sources not polled for {now - self.polled_at:.0f} s"
        return None


#: The process's record (every source partition of every worker thread writes here).
PROGRESS = ProgressWatch()


class StallMonitor:
    """Stalled: input pending and no epoch completed for ``stall_s`` seconds."""

    def __init__(
        self,
        stall_s: float,
        watch: ProgressWatch = PROGRESS,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
    ):
        self.stall_s = stall_s
        self._watch = watch
        self._clock = clock
        self._log = log or logging.getLogger("clickstream.health")
        self._lock = threading.Lock()
        self.stalled = False

    def check(self) -> str | None:
        """None when healthy, else the one-line reason. Logs a WARNING when the
        job becomes stalled and an INFO line when it makes progress again."""
        now = self._clock()
        since = now - self._watch.epoch_at
        pending = self._watch.input_pending(now, self.stall_s) if since >= self.stall_s else None
        stalled = pending is not None
        with self._lock:
            changed, self.stalled = stalled != self.stalled, stalled
        reason = (
            f"stalled: input pending and no epoch completed for {since:.0f} s: "
            f"{pending} (HEALTH_STALL_SECONDS={self.stall_s:g})"
        )
        if changed and stalled:
            self._log.warning("%s", reason)
        elif changed:
            self._log.info("progressing again: an epoch completed %.0f s ago", since)
        return reason if stalled else None
