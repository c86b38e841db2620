"""The interval-join run: its settings, and its expected output computed from
the generator's records (every valid click with each version of its user
within the bounds; a click with none once, unmatched)."""

from __future__ import annotations

import bisect

BEFORE_S = AFTER_S = 5
INTERVAL_ENV = {
    "JOIN_STRATEGY": "interval",
    "INTERVAL_BEFORE_SECONDS": str(BEFORE_S),
    "INTERVAL_AFTER_SECONDS": str(AFTER_S),
}


def expected_pairs(options) -> tuple[int, int]:
    """(pairs, clicks without a pair) for the workload of ``options``."""
    from clickstream.generate import generate_records
    from operators.record_mapping import parse_click, parse_profile
    from operators.records import DeadLetter, SourceRecord

    far_future = 2**62
    versions: dict[str, list[int]] = {}
    clicks: list[tuple[str, int]] = []
    for n, rec in enumerate(generate_records(options)):
        source = SourceRecord(0, n, rec.key, rec.value, rec.timestamp_ms)
        parse = parse_profile if rec.topic_role == "profiles" else parse_click
        event = parse(source, rec.topic_role, far_future)
        if type(event) is DeadLetter:
            continue
        if rec.topic_role == "profiles":
            versions.setdefault(event.key, []).append(event.ts_ms)
        else:
            clicks.append((event.key, event.ts_ms))
    for times in versions.values():
        times.sort()
    pairs = lone = 0
    for key, t in clicks:
        times = versions.get(key, [])
        found = bisect.bisect_right(times, t + AFTER_S * 1000) - bisect.bisect_left(
            times, t - BEFORE_S * 1000
        )
        pairs += found
        lone += not found
    return pairs, lone
