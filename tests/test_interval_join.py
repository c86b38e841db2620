"""Stories of the interval join: a click meets every profile version of its user
within [T - before, T + after]; unmatched events come out once, only when
nothing can match them any more; late events go aside; state is freed."""

from __future__ import annotations

from datetime import timedelta

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from operators.interval_join import IntervalJoinLogic, interval_join
from operators.progress import CLICKS, PROFILES, ShardInput
from operators.records import PartitionStatus
from story import CLICKS_TOPIC, PROFILES_TOPIC, T0, batch, click, finished, polls, profile

WORKERS = [pytest.param(1, id="1worker"), pytest.param(2, id="2workers")]


def run_interval(
    click_input: list,
    profile_input: list,
    *,
    before_s: float,
    after_s: float,
    how: str = "inner",
    lateness_s: float = 0,
    wait_s: float = 30,
    workers: int = 1,
):
    flow = Dataflow("interval_story")
    out = interval_join(
        "join",
        op.input("clicks", flow, TestingSource(click_input)),
        op.input("profiles", flow, TestingSource(profile_input)),
        before=timedelta(seconds=before_s),
        after=timedelta(seconds=after_s),
        lateness=timedelta(seconds=lateness_s),
        wait=timedelta(seconds=wait_s),
        how=how,
        shards=3,
    )
    joined: list = []
    late: list = []
    op.output("joined", out.joined, TestingSink(joined))
    op.output("late", out.late, TestingSink(late))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return (
        sorted((_names(r) for rs in joined for r in rs), key=_key),
        sorted(_name(x.click) for xs in late for x in xs),
    )


def _name(event) -> str | None:
    if event is None:
        return None
    body = orjson.loads(event.value)
    return body.get("name") or body.get("tier")


def _names(result) -> tuple[str | None, str | None]:
    return (_name(result.click), _name(result.profile))


def _key(pair):
    return tuple("" if x is None else x for x in pair)


@pytest.mark.parametrize("workers", WORKERS)
def test_asymmetric_bounds_match_exactly_at_each_bound_and_not_1ms_outside(workers):
    # before = 5 s, after = 2 s: a click at 100 s meets versions in [95 s, 102 s].
    c = click("ann", 100, "c")
    versions = [
        profile("ann", 94.999, "too-early"),
        profile("ann", 95, "at-before"),
        profile("ann", 100, "same-time"),
        profile("ann", 102, "at-after"),
        profile("ann", 102.001, "too-late"),
        profile("bob", 100, "other-user"),
    ]
    joined, late = run_interval(
        polls(CLICKS_TOPIC, [c]), polls(PROFILES_TOPIC, versions), before_s=5, after_s=2, workers=workers
    )
    assert joined == [("c", "at-after"), ("c", "at-before"), ("c", "same-time")]
    assert late == []


@pytest.mark.parametrize("workers", WORKERS)
def test_a_zero_bound_is_one_sided(workers):
    c = click("ann", 100, "c")
    versions = [profile("ann", 99, "past"), profile("ann", 100, "now"), profile("ann", 101, "future")]
    joined, _ = run_interval(
        polls(CLICKS_TOPIC, [c]), polls(PROFILES_TOPIC, versions), before_s=0, after_s=5, workers=workers
    )
    assert joined == [("c", "future"), ("c", "now")]


@pytest.mark.parametrize("workers", WORKERS)
def test_a_right_event_arriving_after_the_left_still_pairs(workers):
    # The click is read first; the profile comes in a later poll: one pair, no "unmatched".
    clicks = polls(CLICKS_TOPIC, [click("ann", 100, "c")], end=False)
    profiles = [
        batch(PROFILES_TOPIC, []),
        batch(PROFILES_TOPIC, [profile("ann", 103, "v")]),
        finished(PROFILES_TOPIC),
    ]
    joined, _ = run_interval(
        [*clicks, finished(CLICKS_TOPIC)], profiles, before_s=5, after_s=5, how="left", workers=workers
    )
    assert joined == [("c", "v")]


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize(
    "how,expected",
    [
        ("inner", [("c1", "v1")]),
        ("left", [("c1", "v1"), ("c2", None)]),
        ("right", [(None, "v2"), ("c1", "v1")]),
        ("outer", [(None, "v2"), ("c1", "v1"), ("c2", None)]),
    ],
)
def test_outer_joins_emit_each_unmatched_side_once(how, expected, workers):
    clicks = [click("ann", 100, "c1"), click("bob", 100, "c2")]
    versions = [profile("ann", 101, "v1"), profile("cat", 100, "v2")]
    joined, _ = run_interval(
        polls(CLICKS_TOPIC, clicks),
        polls(PROFILES_TOPIC, versions),
        before_s=5,
        after_s=5,
        how=how,
        workers=workers,
    )
    assert joined == expected


def shard_input(
    side: int, items: list, wm_s: float | None = None, status: PartitionStatus = PartitionStatus.READING
) -> ShardInput:
    """One shard's input: ``items`` and a position whose watermark is ``wm_s``
    (a READING partition's watermark is just below its largest event time)."""
    max_ms = None if wm_s is None else T0 + int(wm_s * 1000) + 1
    return ShardInput(side, 0, 1, items, max_ms, status, T0)


def pairs(emitted: list) -> list[tuple[str | None, str | None]]:
    return [_names(r) for out, _ in emitted for r in out]


def test_an_unmatched_click_waits_for_the_profiles_watermark_past_its_interval():
    logic = IntervalJoinLogic(
        before_ms=5000, after_ms=2000, lateness_ms=1000, wait_s=60, how="left", state=None
    )
    c = click("ann", 100, "c")
    emitted, _ = logic.on_batch([shard_input(CLICKS, [c], 100)])
    assert emitted == []
    # profiles at 102.999 s: T + after + lateness = 103 s not passed yet
    emitted, _ = logic.on_batch([shard_input(PROFILES, [], 103)])
    assert pairs(emitted) == []
    assert logic.state_size() == (1, 0)
    emitted, _ = logic.on_batch([shard_input(PROFILES, [], 103.001)])
    assert pairs(emitted) == [("c", None)]
    assert logic.state_size() == (0, 0)  # state freed


def test_the_wait_caps_an_unmatched_click_in_processing_time_and_no_later_match_revises_it():
    logic = IntervalJoinLogic(before_ms=5000, after_ms=5000, lateness_ms=0, wait_s=0, how="left", state=None)
    logic.on_batch([shard_input(CLICKS, [click("ann", 100, "c")], 100)])
    assert logic.notify_at() is not None
    emitted, _ = logic.on_notify()
    assert pairs(emitted) == [("c", None)]
    emitted, _ = logic.on_batch([shard_input(PROFILES, [profile("ann", 101, "v")], 101)])
    assert pairs(emitted) == []  # the click was resolved: no pair afterwards
    assert logic.notify_at() is None


def test_a_matched_click_stays_for_more_matches_until_the_watermark_frees_it():
    logic = IntervalJoinLogic(before_ms=5000, after_ms=5000, lateness_ms=0, wait_s=0, how="left", state=None)
    logic.on_batch([shard_input(PROFILES, [profile("ann", 99, "v1")], 99)])
    emitted, _ = logic.on_batch([shard_input(CLICKS, [click("ann", 100, "c")], 100)])
    assert pairs(emitted) == [("c", "v1")]
    assert logic.on_notify() == ([], False) and logic.notify_at() is None  # matched: no wait
    emitted, _ = logic.on_batch([shard_input(PROFILES, [profile("ann", 104, "v2")], 104)])
    assert pairs(emitted) == [("c", "v2")]
    emitted, _ = logic.on_batch([shard_input(PROFILES, [], 106)])
    assert pairs(emitted) == [] and logic.state_size() == (0, 2)
    # a version stays until the clicks watermark passes its time + before
    logic.on_batch([shard_input(CLICKS, [], 104.001)])
    assert logic.state_size() == (0, 1)
    logic.on_batch([shard_input(CLICKS, [], 109.001)])
    assert logic.state_size() == (0, 0)


def test_late_events_go_aside_and_are_not_joined():
    logic = IntervalJoinLogic(
        before_ms=5000, after_ms=5000, lateness_ms=2000, wait_s=60, how="outer", state=None
    )
    logic.on_batch([shard_input(CLICKS, [], 100), shard_input(PROFILES, [], 100)])
    on_time = click("ann", 98, "on-time")  # 2 s behind: within the lateness
    too_late = click("ann", 97.999, "too-late")
    late_profile = profile("ann", 97, "late-v")
    ((out, late),) = logic.on_batch(
        [shard_input(CLICKS, [on_time, too_late], 100), shard_input(PROFILES, [late_profile], 100)]
    )[0]
    assert out == []
    assert [
        (_name(x.click), x.window_start_ms - T0, x.window_end_ms - T0, x.watermark_ms - T0) for x in late
    ] == [("too-late", 92_999, 102_999, 100_000), ("late-v", 92_000, 102_000, 100_000)]
    assert logic.state_size() == (1, 0)


def test_a_snapshot_resumes_with_the_same_state():
    logic = IntervalJoinLogic(before_ms=5000, after_ms=5000, lateness_ms=0, wait_s=60, how="left", state=None)
    logic.on_batch([shard_input(CLICKS, [click("ann", 100, "c")], 100)])
    resumed = IntervalJoinLogic(5000, 5000, 0, 60, "left", logic.snapshot())
    emitted, _ = resumed.on_batch([shard_input(PROFILES, [profile("ann", 103, "v")], 103)])
    assert pairs(emitted) == [("c", "v")]
    assert resumed.state_size() == (1, 1)
