"""Health that means progress: is the job reading input but completing no epoch?

A process can answer HTTP while its dataflow is stuck (a peer stopped, a
broker that accepts connections but never answers). :data:`PROGRESS` is the
process-wide record the source keeps at almost no cost (a float per batch
with records, a set update when a partition starts or stops reading, a float
per epoch); :class:`StallMonitor` turns it into healthy / stalled, logging
one line when that changes. Bytewax gates its inputs on the downstream
progress of the whole cluster, so the source's per-epoch ``snapshot()``
stops when any worker downstream is stuck.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable


class ProgressWatch:
    """When this process last completed an epoch and last read input."""

    def __init__(self, now: float | None = None):
        #: The start counts as progress: a job gets ``stall_s`` to complete its first epoch.
        self.epoch_at = time.monotonic() if now is None else now
        #: When records were last read (the source sets it once per batch with records).
        self.input_at = float("-inf")
        #: Partitions whose last poll returned records (not caught up).
        self.reading: set[Hashable] = set()

    def set_reading(self, partition: Hashable, reading: bool) -> None:
        if reading:
            self.reading.add(partition)
        else:
            self.reading.discard(partition)

    def input_pending(self) -> bool:
        """Input no completed epoch covers: a partition behind its end, or records
        read since the last epoch completed."""
        return bool(self.reading) or self.input_at > self.epoch_at


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
        since = self._clock() - self._watch.epoch_at
        stalled = self._watch.input_pending() and since >= self.stall_s
        with self._lock:
            changed, self.stalled = stalled != self.stalled, stalled
        reason = (
            f"stalled: input pending and no epoch completed for {since:.0f} s "
            f"(HEALTH_STALL_SECONDS={self.stall_s:g})"
        )
        if changed and stalled:
            self._log.warning("%s", reason)
        elif changed:
            self._log.info("progressing again: an epoch completed %.0f s ago", since)
        return reason if stalled else None
