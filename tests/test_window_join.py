"""Stories for ``window_join``: latest profile in the click's own tumbling window.

Clicks and profiles come from one TestingSource (batch size 1) split by type,
each event as a list of one (the operator takes lists, e.g. one per Kafka
poll), so the arrival order (which decides lateness) is the order written
here. Windows: 10 minutes aligned to 2024-01-01T00:00Z. The join is keyed by
state shard: users of one shard share one clock (watermark).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import WindowMetadata
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from events import click, is_click, profile
from operators.progress import shard_key
from operators.records import Click, JoinResult, ProfileVersion
from operators.window_join import _Splitter, window_join
from operators.window_matching import WindowMatchLogic

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ALIGN = datetime(2024, 1, 1, tzinfo=UTC)
WINDOW = timedelta(minutes=10)
NO_LATENESS = timedelta(hours=1)

Event = Click  # clicks and profile versions are both events

_click_offsets: dict[int, int] = {}
_profile_offsets: dict[int, int] = {}


def at(minute: int, second: int = 0, ms: int = 0) -> int:
    """Epoch ms of 2024-01-01 10:mm:ss.ms UTC."""
    moment = ALIGN + timedelta(hours=10, minutes=minute, seconds=second, milliseconds=ms)
    return (moment - EPOCH) // timedelta(milliseconds=1)


Outputs = tuple[list[JoinResult], list[Click], list[ProfileVersion]]


def run(
    events: Sequence[Event | list[Event]],
    wait: timedelta,
    workers: int = 1,
    shards: int = 4,
) -> Outputs:
    """Run the join; an item is an event (a list of one) or a list of events of one kind."""
    joined: list[list[JoinResult]] = []
    late_clicks: list[list[Click]] = []
    late_profiles: list[list[ProfileVersion]] = []
    flow = Dataflow("window_join_test")
    items = [e if isinstance(e, list) else [e] for e in events]
    inp = op.input("inp", flow, TestingSource(items, batch_size=1))
    split = op.branch("split", inp, lambda es: is_click(es[0]))
    out = window_join(
        "join",
        split.trues,
        split.falses,
        window_length=WINDOW,
        wait_for_system_duration=wait,
        align_to=ALIGN,
        shards=shards,
    )
    op.output("joined", out.joined, TestingSink(joined))
    op.output("late_clicks", out.late_clicks, TestingSink(late_clicks))
    op.output("late_profiles", out.late_profiles, TestingSink(late_profiles))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, addresses=[], proc_id=0, worker_count_per_proc=workers)
    return _flat(joined), _flat(late_clicks), _flat(late_profiles)


def _flat(lists: list[list]) -> list:
    return [x for xs in lists for x in xs]


def coords(record: Event):
    return (type(record).__name__, record.partition, record.offset)


def by_click(results: list[JoinResult]) -> list[JoinResult]:
    # Order is not defined across users, windows or workers.
    return sorted(results, key=lambda r: coords(r.click))


def by_coords(records: list[Event]) -> list[Event]:
    return sorted(records, key=coords)


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def workers(request) -> int:
    return request.param


def test_story_versions_windows_and_unknown_users(workers):
    # alice, window 10:00-10:10: two versions, clicks before, between, after.
    a_c0 = click("alice", at(0, 30))  # before any profile of the window
    a_v1 = profile("alice", at(1), "v1")
    a_c1 = click("alice", at(2))
    a_c2 = click("alice", at(5))  # arrives before v2, but v2 is earlier in event time
    a_v2 = profile("alice", at(4), "v2")
    a_c3 = click("alice", at(9, 59, 999))
    # alice, window 10:10-10:20: v2 is in the previous window, so invisible here.
    a_c4 = click("alice", at(11))
    a_v3 = profile("alice", at(12), "v3")  # after c4 in event time: not for c4
    a_c5 = click("alice", at(15))
    # bob: profile and click in different windows never match.
    b_v1 = profile("bob", at(5), "v1")
    b_c1 = click("bob", at(15))
    # carol: a profile of the very same millisecond counts, whatever the arrival order.
    c_c1 = click("carol", at(3))
    c_v1 = profile("carol", at(3), "v1")
    # nobody has no profile at all.
    n_c1 = click("nobody", at(3))

    events = [
        a_c0, a_v1, a_c1, a_c2, a_v2, a_c3, a_c4, a_v3, a_c5,
        b_v1, b_c1, c_c1, c_v1, n_c1,
    ]  # fmt: skip
    joined, late_clicks, late_profiles = run(events, NO_LATENESS, workers)

    assert by_click(joined) == by_click(
        [
            JoinResult(a_c0, None),
            JoinResult(a_c1, a_v1),
            JoinResult(a_c2, a_v2),
            JoinResult(a_c3, a_v2),
            JoinResult(a_c4, None),
            JoinResult(a_c5, a_v3),
            JoinResult(b_c1, None),
            JoinResult(c_c1, c_v1),
            JoinResult(n_c1, None),
        ]
    )
    assert late_clicks == []
    assert late_profiles == []


def test_story_late_click_and_late_profile(workers):
    # One shard, wait 0: anything behind the latest event time of any user is late.
    a_v1 = profile("alice", at(1), "v1")
    a_c1 = click("alice", at(5))
    a_late_c = click("alice", at(3))  # would have matched v1, but is late
    a_late_v = profile("alice", at(2), "v-late")  # late: never joined
    a_c2 = click("alice", at(6))
    b_c1 = click("bob", at(7))  # not at 6: the watermark moves on with the wall clock
    b_late_v = profile("bob", at(4), "v-late")
    b_c2 = click("bob", at(8))
    # The clock is the shard's: dave's old click is late because of alice and bob.
    d_c1 = click("dave", at(0, 10))

    events = [a_v1, a_c1, a_late_c, a_late_v, a_c2, b_c1, b_late_v, b_c2, d_c1]
    joined, late_clicks, late_profiles = run(events, timedelta(0), workers, shards=1)

    assert by_click(joined) == by_click(
        [
            JoinResult(a_c1, a_v1),
            JoinResult(a_late_c, None),  # late clicks still get exactly one result
            JoinResult(a_c2, a_v1),
            JoinResult(b_c1, None),
            JoinResult(b_c2, None),
            JoinResult(d_c1, None),
        ]
    )
    assert by_coords(late_clicks) == by_coords([a_late_c, d_c1])
    assert by_coords(late_profiles) == by_coords([a_late_v, b_late_v])


def test_story_clocks_are_per_shard(workers):
    # Two shards, wait 0: alice (shard-001) and bob (shard-000) have their own
    # clocks, so bob's old records are not late because of alice's new ones;
    # dave shares bob's shard, and his old click is late because of bob.
    a_v1 = profile("alice", at(8), "v1")
    a_c1 = click("alice", at(9))
    b_v1 = profile("bob", at(1), "v1")
    b_c1 = click("bob", at(2))
    d_c1 = click("dave", at(0, 10))

    events = [a_v1, a_c1, b_v1, b_c1, d_c1]
    joined, late_clicks, late_profiles = run(events, timedelta(0), workers, shards=2)

    assert by_click(joined) == by_click(
        [JoinResult(a_c1, a_v1), JoinResult(b_c1, b_v1), JoinResult(d_c1, None)]
    )
    assert late_clicks == [d_c1]
    assert late_profiles == []


def window_of(ts_ms: int) -> int:
    ts = EPOCH + timedelta(milliseconds=ts_ms)
    return (ts - ALIGN) // WINDOW


def reference(events: Sequence[Event]) -> list[JoinResult]:
    """Latest profile of the same user and window with ts <= the click's."""
    profiles = [e for e in events if not is_click(e)]
    results = []
    for c in (e for e in events if is_click(e)):
        candidates = [
            p
            for p in profiles
            if p.key == c.key and window_of(p.ts_ms) == window_of(c.ts_ms) and p.ts_ms <= c.ts_ms
        ]
        best: ProfileVersion | None = max(candidates, key=lambda p: p.ts_ms, default=None)
        results.append(JoinResult(c, best))
    return results


def random_events(seed: int, count: int) -> list[Event]:
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(6)]
    # Distinct timestamps over 40 minutes (4 windows), shuffled arrival.
    stamps = rng.sample(range(at(0), at(40), 997), count)
    events: list[Event] = []
    for i, ts in enumerate(stamps):
        user = rng.choice(users)
        if rng.random() < 0.3:
            events.append(profile(user, ts, f"v{i}", partition=rng.randrange(2)))
        else:
            events.append(click(user, ts, partition=rng.randrange(3)))
    return events


def test_random_order_matches_reference(workers):
    events = random_events(seed=11, count=400)

    joined, late_clicks, late_profiles = run(events, NO_LATENESS, workers)

    assert by_click(joined) == by_click(reference(events))
    assert late_clicks == []
    assert late_profiles == []


def in_order_lists(seed: int, count: int) -> list[list[Event]]:
    """Events in event-time order, in lists of one kind (like Kafka polls) of 1-7 events."""
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(20)]
    stamps = sorted(rng.sample(range(at(0), at(60), 331), count))  # 6 windows
    lists: list[list[Event]] = []
    for i, ts in enumerate(stamps):
        user = rng.choice(users)
        if rng.random() < 0.3:
            event: Event = profile(user, ts, f"v{i}", partition=rng.randrange(2))
        else:
            event = click(user, ts, partition=rng.randrange(3))
        same_kind = lists and is_click(lists[-1][0]) == is_click(event)
        if same_kind and len(lists[-1]) < rng.randint(1, 7):
            lists[-1].append(event)
        else:
            lists.append([event])
    return lists


def test_story_in_order_lists_match_the_rule(workers):
    # In-order data read in lists: windows close while the data moves on (the
    # wait is 1 minute of event time), nothing is late, and every click gets
    # the latest version of its user in its window at or before it.
    lists = in_order_lists(seed=3, count=600)
    events = [e for es in lists for e in es]

    joined, late_clicks, late_profiles = run(lists, timedelta(minutes=1), workers)

    assert by_click(joined) == by_click(reference(events))
    assert sum(r.profile is not None for r in joined) > 100
    assert late_clicks == []
    assert late_profiles == []


def test_every_click_exactly_once_even_when_many_are_late(workers):
    events = random_events(seed=5, count=400)
    clicks = [e for e in events if is_click(e)]
    profiles = [e for e in events if not is_click(e)]

    joined, late_clicks, late_profiles = run(events, timedelta(0), workers)

    # Exactly one result per click, nothing invented.
    assert by_coords([r.click for r in joined]) == by_coords(clicks)
    assert late_clicks, "the shuffled input should make some clicks late"
    assert late_profiles, "the shuffled input should make some profiles late"
    late_ids = {coords(c) for c in late_clicks}
    assert len(late_ids) == len(late_clicks)
    assert {coords(p) for p in late_profiles} <= {coords(p) for p in profiles}
    for r in joined:
        if coords(r.click) in late_ids:
            assert r.profile is None
        elif r.profile is not None:
            assert r.profile.key == r.click.key
            assert window_of(r.profile.ts_ms) == window_of(r.click.ts_ms)
            assert r.profile.ts_ms <= r.click.ts_ms
            assert coords(r.profile) not in {coords(p) for p in late_profiles}


class _TestPiece(NamedTuple):
    events: list[Event]


def test_matching_step_takes_the_pieces_back_out_of_the_product():
    # What join_window(insert_mode="product", emit_mode="final") emits at a
    # window's close: every (click piece, profile piece) pair, then the metadata.
    c1, c2, c3 = click("ann", at(3)), click("bo", at(4)), click("ann", at(9))
    v1, v2, v3 = profile("ann", at(2), "v1"), profile("ann", at(5), "v2"), profile("bo", at(6), "v3")
    click_pieces = [_TestPiece([c1, c2]), _TestPiece([c3])]
    profile_pieces = [_TestPiece([v1]), _TestPiece([v2, v3]), _TestPiece([])]
    rows = list(itertools.product(click_pieces, profile_pieces))
    meta = WindowMetadata(ALIGN, ALIGN + WINDOW)
    logic = WindowMatchLogic(None)

    first, discard = logic.on_batch([(0, row) for row in rows[:4]])
    assert (first, discard) == ([], False)
    out, discard = logic.on_batch([(0, row) for row in rows[4:]] + [(0, meta)])
    assert discard
    assert out == [[JoinResult(c1, v1), JoinResult(c2, None), JoinResult(c3, v2)]]

    # A window with clicks only, and rows left without metadata: flushed at EOF.
    logic.on_batch([(1, (_TestPiece([c3]), None))])
    assert logic.on_eof() == ([[JoinResult(c3, None)]], True)


def test_pieces_go_to_the_users_state_shard():
    # The same shard as every other sharded operator (operators.progress.shard_key).
    split = _Splitter(shards=7, length_ms=WINDOW // timedelta(milliseconds=1), align_ms=0)
    events = [click(f"user-{i}", at(i % 30)) for i in range(200)]
    for key, piece in split(events):
        assert {shard_key(e.key, 7) for e in piece.events} == {key}
        assert len({window_of(e.ts_ms) for e in piece.events}) == 1
        assert piece.ts == EPOCH + timedelta(milliseconds=max(e.ts_ms for e in piece.events))
    assert sorted(e for _, p in split(events) for e in p.events) == sorted(events)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_length": timedelta(0)},
        {"window_length": timedelta(microseconds=1500)},
        {"align_to": datetime(2024, 1, 1)},
        {"align_to": ALIGN + timedelta(microseconds=1)},
        {"wait_for_system_duration": timedelta(seconds=-1)},
        {"shards": 0},
    ],
)
def test_rejects_bad_parameters(kwargs):
    params = dict(
        window_length=WINDOW,
        wait_for_system_duration=timedelta(0),
        align_to=ALIGN,
        shards=4,
    )
    params.update(kwargs)
    flow = Dataflow("bad")
    inp = op.input("inp", flow, TestingSource([]))
    split = op.branch("split", inp, lambda e: is_click(e))
    with pytest.raises(ValueError):
        window_join("join", split.trues, split.falses, **params)
