"""How often the shard router spreads a partition's position to every shard.

Positions ride along with data to the shards a batch touches; the other
shards hear a partition's position at most once per interval, except that a
change of status always goes out at once. A caught-up partition has its own,
shorter interval in the join (live clicks wait for the profiles watermark).
"""

from __future__ import annotations

from operators import progress
from operators.progress import PROFILES, ShardRouter
from operators.records import DecodedBatch, PartitionStatus, ProfileVersion

READING, CAUGHT_UP = PartitionStatus.READING, PartitionStatus.CAUGHT_UP


def heartbeat(status: PartitionStatus, at_ms: int) -> DecodedBatch:
    return DecodedBatch("p", 0, 1, [], at_ms - 1, status, at_ms)


def shards_told(router: ShardRouter, batch: DecodedBatch) -> list:
    return sorted(key for key, _ in router.route(batch))


def test_broadcast_throttled_per_status_interval(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    router = ShardRouter(PROFILES, 3, progress_interval_s=0.1, caught_up_interval_s=0.02)
    everyone = ["shard-000", "shard-001", "shard-002"]

    assert shards_told(router, heartbeat(READING, 1)) == everyone  # first report
    clock[0] += 0.05
    assert shards_told(router, heartbeat(READING, 2)) == []  # within 100 ms
    clock[0] += 0.01
    assert shards_told(router, heartbeat(CAUGHT_UP, 3)) == everyone  # status changed
    clock[0] += 0.01
    assert shards_told(router, heartbeat(CAUGHT_UP, 4)) == []  # within 20 ms
    clock[0] += 0.015
    assert shards_told(router, heartbeat(CAUGHT_UP, 5)) == everyone  # 25 ms later
    clock[0] += 0.001
    # Data goes to its own shard with the position; the others wait.
    version = ProfileVersion("u", 6, b"{}", "p", 0, 9)
    data = DecodedBatch("p", 0, 1, [version], 6, CAUGHT_UP, 6)
    routed = router.route(data)
    assert [(key, inp.items, inp.max_event_ms, inp.polled_at_ms) for key, inp in routed] == [
        (progress.shard_key("u", 3), [version], 6, 6)
    ]


def test_caught_up_interval_defaults_to_progress_interval(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    router = ShardRouter(PROFILES, 2, progress_interval_s=0.1)
    assert len(router.route(heartbeat(CAUGHT_UP, 1))) == 2
    clock[0] += 0.05
    assert router.route(heartbeat(CAUGHT_UP, 2)) == []
    clock[0] += 0.06
    assert len(router.route(heartbeat(CAUGHT_UP, 3))) == 2
