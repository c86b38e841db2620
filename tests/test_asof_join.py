"""Stories of the as-of enrichment join, each with its full expected output.

Times are seconds after T0. ``summarise`` turns results into
``(user, click name, matched profile tier or None)``.
"""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest
from bytewax.testing import TestingSource

from operators.asof_join import AsofJoinLogic
from operators.progress import CLICKS, PROFILES, ShardInput, shard_key
from operators.records import PartitionStatus
from operators.version_snapshot import SNAPSHOT_BUCKETS, pickled_versions, snapshot_bucket
from story import (
    CLICKS_TOPIC,
    PROFILES_TOPIC,
    batch,
    click,
    finished,
    polls,
    profile,
    run_asof,
    summarise,
)

WORKERS = [1, 2]


def pause(seconds: float) -> TestingSource.PAUSE:
    return TestingSource.PAUSE(timedelta(seconds=seconds))


@pytest.mark.parametrize("workers", WORKERS)
def test_profile_changing_between_clicks_pins_version_at_event_time(workers):
    """Alice is on the free tier from t=0 and pro from t=20.

    Her clicks at t=10 and t=30 see free and pro. A click at t=15 that is read
    *after* the pro version arrived still sees free: the version valid at its
    event time, not the latest one read.
    """
    clicks = polls(
        CLICKS_TOPIC,
        [click("alice", 10, "c10"), click("alice", 30, "c30")],
        [click("alice", 15, "c15-read-late")],
    )
    profiles = polls(PROFILES_TOPIC, [profile("alice", 0, "free"), profile("alice", 20, "pro")])

    assert summarise(run_asof(clicks, profiles, workers=workers)) == [
        ("alice", "c10", "free"),
        ("alice", "c15-read-late", "free"),
        ("alice", "c30", "pro"),
    ]


@pytest.mark.parametrize("workers", WORKERS)
def test_click_older_than_first_version_is_unmatched(workers):
    """Bob's profile starts at t=100; his click at t=50 predates it."""
    clicks = polls(CLICKS_TOPIC, [click("bob", 50, "before"), click("bob", 150, "after")])
    profiles = polls(PROFILES_TOPIC, [profile("bob", 100, "gold")])

    assert summarise(run_asof(clicks, profiles, workers=workers)) == [
        ("bob", "after", "gold"),
        ("bob", "before", None),
    ]


@pytest.mark.parametrize("workers", WORKERS)
def test_ttl_expires_an_old_version(workers):
    """TTL 60 s: a version 30 s old matches, one exactly 60 s old matches, 61 s does not."""
    clicks = polls(
        CLICKS_TOPIC,
        [click("carol", 30, "fresh"), click("carol", 60, "at-ttl"), click("carol", 61, "expired")],
    )
    profiles = polls(PROFILES_TOPIC, [profile("carol", 0, "basic")])

    assert summarise(run_asof(clicks, profiles, ttl_s=60, workers=workers)) == [
        ("carol", "at-ttl", "basic"),
        ("carol", "expired", None),
        ("carol", "fresh", "basic"),
    ]


def test_profile_arriving_after_its_click_within_the_wait_is_matched():
    """Dave clicks at t=10. His profile (t=5) is read 0.5 s later (processing time).

    The profiles input has not passed t=10 when the click arrives, so the
    click waits (up to 30 s) and is matched once the profile arrives.
    """
    clicks = polls(CLICKS_TOPIC, [click("dave", 10, "waits")])
    profiles = [
        pause(0.5),
        batch(PROFILES_TOPIC, [profile("dave", 5, "pro")]),
        finished(PROFILES_TOPIC),
    ]
    assert summarise(run_asof(clicks, profiles, wait_s=30)) == [("dave", "waits", "pro")]


def test_click_waits_no_longer_than_the_wait_then_goes_unmatched():
    """Erin's profile is read 2 s after her click but the wait is 0.2 s.

    The click is resolved with what is known after 0.2 s: nothing, so it is
    emitted unmatched; a later click (read after the profile) matches.
    """
    clicks = [
        batch(CLICKS_TOPIC, [click("erin", 10, "gave-up")]),
        pause(3),
        batch(CLICKS_TOPIC, [click("erin", 11, "later")]),
        finished(CLICKS_TOPIC),
    ]
    profiles = [
        pause(2),
        batch(PROFILES_TOPIC, [profile("erin", 5, "pro")]),
        finished(PROFILES_TOPIC),
    ]
    assert summarise(run_asof(clicks, profiles, wait_s=0.2)) == [
        ("erin", "gave-up", None),
        ("erin", "later", "pro"),
    ]


@pytest.mark.parametrize("workers", WORKERS)
def test_unknown_users_are_emitted_unmatched_never_dropped(workers):
    clicks = polls(
        CLICKS_TOPIC,
        [click("known", 10, "k1"), click("ghost", 10, "g1"), click("ghost", 20, "g2")],
    )
    profiles = polls(PROFILES_TOPIC, [profile("known", 0, "free")])

    assert summarise(run_asof(clicks, profiles, workers=workers)) == [
        ("ghost", "g1", None),
        ("ghost", "g2", None),
        ("known", "k1", "free"),
    ]


@pytest.mark.parametrize("workers", WORKERS)
def test_result_does_not_depend_on_how_topics_interleave(workers):
    """Clicks read long before profiles (cold start) give the same result as
    profiles read first: clicks wait for the profile watermark."""
    story_clicks = [click("fay", 10, "a"), click("fay", 25, "b"), click("gus", 12, "c")]
    story_profiles = [profile("fay", 0, "v1"), profile("fay", 20, "v2"), profile("gus", 11, "g")]
    expected = [("fay", "a", "v1"), ("fay", "b", "v2"), ("gus", "c", "g")]

    clicks_first = polls(CLICKS_TOPIC, story_clicks)
    profiles_late = [pause(0.3), *polls(PROFILES_TOPIC, story_profiles[:1], story_profiles[1:])]
    assert summarise(run_asof(clicks_first, profiles_late, workers=workers)) == expected

    profiles_first = polls(PROFILES_TOPIC, story_profiles)
    clicks_late = [pause(0.3), *polls(CLICKS_TOPIC, story_clicks[:2], story_clicks[2:])]
    assert summarise(run_asof(clicks_late, profiles_first, workers=workers)) == expected


def test_lagging_profile_partition_holds_clicks_back():
    """Profiles has two partitions. Partition 0 is far ahead (t=100), partition 1
    is still at t=5 and only later delivers Hal's t=8 version. Hal's click at
    t=10 must wait for partition 1, not resolve on partition 0's progress."""
    clicks = polls(CLICKS_TOPIC, [click("hal", 10, "h")])
    profiles = [
        batch(PROFILES_TOPIC, [profile("ida", 100, "x", partition=0)], partition=0, partitions=2),
        batch(PROFILES_TOPIC, [profile("hal", 5, "old", partition=1)], partition=1, partitions=2),
        pause(0.5),
        batch(PROFILES_TOPIC, [profile("hal", 8, "new", partition=1)], partition=1, partitions=2),
        finished(PROFILES_TOPIC, 0, 2),
        finished(PROFILES_TOPIC, 1, 2),
    ]
    assert summarise(run_asof(clicks, profiles)) == [("hal", "h", "new")]


def test_caught_up_idle_profiles_do_not_hold_clicks_back():
    """Tailing: the profiles reader is caught up (wall clock far past the click)
    and idle. Ivy's click resolves at once, long before the 30 s wait."""
    clicks = [batch(CLICKS_TOPIC, [click("ivy", 10, "now")]), pause(1.0)]
    profiles = [
        batch(PROFILES_TOPIC, [profile("ivy", 0, "free")]),
        batch(PROFILES_TOPIC, [], status=PartitionStatus.CAUGHT_UP, polled_at_ms=click("x", 3600, "x").ts_ms),
        pause(1.0),
    ]
    # No FINISHED markers: the inputs end only because the testing sources run dry
    # after the pauses; the click must have resolved before, from the watermark.
    import time

    started = time.monotonic()
    results = run_asof(clicks, profiles, wait_s=30)
    assert summarise(results) == [("ivy", "now", "free")]
    assert time.monotonic() - started < 10


def _shard_input(side, items, status=PartitionStatus.READING, polled_at_ms=0):
    max_ts = max((i.ts_ms for i in items), default=None)
    return ShardInput(side, 0, 1, list(items), max_ts, status, polled_at_ms)


def test_old_versions_and_expired_users_are_evicted():
    """State stays bounded: with TTL 60 s and lateness 10 s, once clicks reach
    t=200 only versions that clicks at t>=190 could still match remain."""
    logic = AsofJoinLogic(ttl_ms=60_000, wait_s=30, lateness_ms=10_000, state=None)
    logic.on_batch(
        [
            _shard_input(
                PROFILES,
                [
                    profile("jay", 0, "v0"),
                    profile("jay", 100, "v100"),
                    profile("jay", 150, "v150"),
                    profile("kim", 0, "only"),
                    profile("lee", 180, "recent"),
                ],
                status=PartitionStatus.FINISHED,
            )
        ]
    )
    assert logic.state_size() == (3, 5, 0)

    out, _ = logic.on_batch([_shard_input(CLICKS, [click("jay", 200, "late-in-stream")])])
    assert summarise(out[0]) == [("jay", "late-in-stream", "v150")]
    # horizon = 200 - 10 = 190: jay keeps v150 only (v0 and v100 superseded
    # before 190), kim's only version expired at 60 < 190, lee is fresh.
    assert sorted(logic.versions) == ["jay", "lee"]
    assert [v.ts_ms for v in logic.versions["jay"]] == [profile("jay", 150, "").ts_ms]
    assert logic.state_size() == (2, 2, 0)


def test_snapshot_restores_waiting_clicks_and_versions():
    """A shard restored from its snapshot resolves a waiting click the same way."""
    logic = AsofJoinLogic(ttl_ms=60_000, wait_s=30, lateness_ms=0, state=None)
    logic.on_batch([_shard_input(PROFILES, [profile("mo", 0, "v0")])])
    out, _ = logic.on_batch([_shard_input(CLICKS, [click("mo", 5, "waiting")])])
    assert out == []  # the profiles input has not passed t=5 yet
    restored = AsofJoinLogic(60_000, 30, 0, logic.snapshot())
    out, _ = restored.on_batch([_shard_input(PROFILES, [], status=PartitionStatus.FINISHED)])
    assert summarise(out[0]) == [("mo", "waiting", "v0")]


def test_snapshot_repickles_only_changed_buckets_and_restores_everything():
    """A snapshot is pickled only when Bytewax pickles it (recovery on), and then
    only the buckets whose users changed; a restored shard holds the same
    versions, and its rebuilt expiry still evicts on time."""
    logic = AsofJoinLogic(ttl_ms=100_000, wait_s=30, lateness_ms=0, state=None)
    users = [f"user-{i}" for i in range(40)]
    logic.on_batch([_shard_input(PROFILES, [profile(u, 0, "v0") for u in users])])
    taken = logic.snapshot()
    logic.on_batch([_shard_input(PROFILES, [profile("user-7", 50, "v50")])])
    # Taken before user-7's new version: pickled afterwards, it still holds v0 only.
    first = pickle.loads(pickle.dumps(taken))
    assert len(first.version_buckets) == SNAPSHOT_BUCKETS
    assert pickled_versions(first.version_buckets[snapshot_bucket("user-7")])["user-7"] == (
        profile("user-7", 0, "v0"),
    )

    pickled_before = list(logic.bucket_cache.blobs)
    second = pickle.loads(pickle.dumps(logic.snapshot()))
    changed = [
        i for i, (a, b) in enumerate(zip(pickled_before, logic.bucket_cache.blobs, strict=True)) if a is not b
    ]
    assert changed == [snapshot_bucket("user-7")]  # the others reuse their bytes
    assert [a == b for a, b in zip(first.version_buckets, second.version_buckets, strict=True)].count(
        False
    ) == 1
    assert pickle.loads(pickle.dumps(logic.snapshot())).version_buckets == second.version_buckets

    restored = AsofJoinLogic(100_000, 30, 0, second)
    assert restored.versions == logic.versions
    assert restored.state_size() == (40, 41, 0)
    assert restored.snapshot().version_buckets.blobs() == second.version_buckets
    # Clicks at t=150 s: every v0 (expired at 100 s) is evicted, user-7 keeps v50.
    out, _ = restored.on_batch(
        [
            _shard_input(CLICKS, [click("user-7", 150, "c")]),
            _shard_input(PROFILES, [], status=PartitionStatus.FINISHED),
        ]
    )
    assert summarise(out[0]) == [("user-7", "c", "v50")]
    assert sorted(restored.versions) == ["user-7"]
    after = pickle.loads(pickle.dumps(restored.snapshot()))
    assert pickled_versions(after.version_buckets[snapshot_bucket("user-7")]) == {
        "user-7": (profile("user-7", 50, "v50"),)  # v0 superseded and dropped
    }
    assert sum(len(pickled_versions(b)) for b in after.version_buckets) == 1


def test_a_store_that_pickled_events_themselves_still_restores():
    """Stores written before versions were pickled as plain tuples."""
    logic = AsofJoinLogic(ttl_ms=100_000, wait_s=30, lateness_ms=0, state=None)
    logic.on_batch([_shard_input(PROFILES, [profile(f"user-{i}", 0, "v0") for i in range(40)])])
    state = logic.snapshot()
    old_buckets: list[dict] = [{} for _ in range(SNAPSHOT_BUCKETS)]
    for user, versions in logic.versions.items():
        old_buckets[snapshot_bucket(user)][user] = versions
    old = state._replace(version_buckets=tuple(pickle.dumps(b) for b in old_buckets))
    restored = AsofJoinLogic(100_000, 30, 0, pickle.loads(pickle.dumps(old)))
    assert restored.versions == logic.versions
    assert {type(v) for vs in restored.versions.values() for v in vs} == {type(profile("a", 0, "v"))}


def test_a_snapshot_never_pickled_does_no_pickling():
    """Without recovery Bytewax takes snapshots but never pickles them."""
    logic = AsofJoinLogic(ttl_ms=100_000, wait_s=30, lateness_ms=0, state=None)
    logic.on_batch([_shard_input(PROFILES, [profile(f"user-{i}", 0, "v0") for i in range(40)])])
    logic.snapshot()
    logic.snapshot()
    assert logic.bucket_cache.buckets == [None] * SNAPSHOT_BUCKETS


def test_shard_key_is_stable_and_spread():
    assert shard_key("alice", 16) == shard_key("alice", 16)
    keys = {shard_key(f"user-{i}", 16) for i in range(1000)}
    assert keys == {f"shard-{i:03d}" for i in range(16)}


@pytest.mark.parametrize("workers", WORKERS)
def test_profiles_sharing_a_timestamp_across_polls_are_all_seen(workers):
    """Many users' first versions share t=0 and arrive over several polls.

    Reading the first poll's t=0 profiles must not let t=0 clicks resolve:
    more t=0 profiles may follow in the same partition. (Found by the demo.)
    """
    clicks = polls(CLICKS_TOPIC, [click("nia", 0, "n0"), click("oli", 0, "o0")])
    profiles = [
        batch(PROFILES_TOPIC, [profile("nia", 0, "n-v1")]),
        pause(0.3),
        batch(PROFILES_TOPIC, [profile("oli", 0, "o-v1")]),
        finished(PROFILES_TOPIC),
    ]
    assert summarise(run_asof(clicks, profiles, workers=workers)) == [
        ("nia", "n0", "n-v1"),
        ("oli", "o0", "o-v1"),
    ]
