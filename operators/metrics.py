"""Prometheus metrics of the package's jobs, and a periodic progress log line.

Counters are per process (every worker thread of a process adds to the same
ones); scrape each process (pod). ``serve_metrics`` exposes them over HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Dict, Optional

from prometheus_client import REGISTRY, Counter, Gauge, start_http_server

RECORDS_IN = Counter(
    "clickstream_records_in", "Input records read, valid or not", ["topic"]
)
DEAD_LETTERED = Counter(
    "clickstream_dead_lettered", "Records sent to the dead-letter topic", ["topic", "reason"]
)
JOINED = Counter("clickstream_joined", "Clicks joined with a profile")
UNMATCHED = Counter("clickstream_unmatched", "Clicks emitted without a profile")
#: ``job``: the windowed job's name (top_users, alerts, sessions).
LATE = Counter("clickstream_late", "Clicks whose window had already closed", ["job"])
RESULTS = Counter("clickstream_results", "Windows, alerts or sessions emitted", ["job"])
EVICTIONS = Counter("clickstream_state_evictions", "Profile versions evicted from join state")
#: Summed over all the shards of this process: each shard adds the changes of
#: its own size, so the ``shard`` label is always ``"all"`` (kept for scrapers).
STATE_SIZE = Gauge(
    "clickstream_state_size",
    "Items held in state by this process (all its shards together), per kind",
    ["kind", "shard"],
)

log = logging.getLogger("clickstream.progress")


def serve_metrics(port: int) -> None:
    """Serve ``/metrics`` on ``port`` (0: do not serve)."""
    if port:
        start_http_server(port)
        log.info("metrics on http://0.0.0.0:%d/metrics", port)


def _total(name: str) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == name:
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    total += sample.value
    return total


def start_progress_log(job: str, interval_s: float) -> Optional[threading.Thread]:
    """Log one progress line every ``interval_s``: records in and out, and rates."""
    if interval_s <= 0:
        return None

    def run() -> None:
        last: Dict[str, float] = {}
        last_t = time.monotonic()
        while True:
            time.sleep(interval_s)
            now = time.monotonic()
            current = {
                "in": _total("clickstream_records_in"),
                "joined": _total("clickstream_joined"),
                "unmatched": _total("clickstream_unmatched"),
                "dead": _total("clickstream_dead_lettered"),
                "late": _total("clickstream_late"),
                "results": _total("clickstream_results"),
            }
            elapsed = max(now - last_t, 1e-9)
            rate = (current["in"] - last.get("in", 0.0)) / elapsed
            log.info(
                "%s progress: in=%d (%.0f/s) joined=%d unmatched=%d dead_lettered=%d late=%d results=%d",
                job, current["in"], rate, current["joined"], current["unmatched"],
                current["dead"], current["late"], current["results"],
            )
            last, last_t = current, now

    thread = threading.Thread(target=run, name="progress-log", daemon=True)
    thread.start()
    return thread
