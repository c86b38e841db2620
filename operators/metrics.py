"""Prometheus metrics of the package's jobs (their definitions only).

Counters are per process (every worker thread of a process adds to the same
ones); scrape each process (pod). ``dataflows.runtime.serve_metrics`` exposes
them over HTTP; this module only defines them (no socket, no thread).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RECORDS_IN = Counter("clickstream_records_in", "Input records read, valid or not", ["topic"])
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
#: ``policy``: the ON_INPUT_OFFSET_OUT_OF_RANGE value applied (fail, earliest, latest).
INPUT_OFFSET_OUT_OF_RANGE = Counter(
    "clickstream_input_offset_out_of_range",
    "Input partitions whose next offset was outside the partition (ON_INPUT_OFFSET_OUT_OF_RANGE)",
    ["job", "topic", "policy"],
)
