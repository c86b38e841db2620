"""Stories for ``running_join``: latest profile *received* so far, one result per click.

Clicks and profiles come from one TestingSource (batch size 1) split by type,
so the processing order the strategy depends on is the order written here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from events import click, is_click, profile
from operators.records import Click, JoinResult, ProfileVersion
from operators.running_join import running_join

Event = Click | ProfileVersion


def build_flow(events: Sequence[Event], out: list[JoinResult]) -> Dataflow:
    flow = Dataflow("running_join_test")
    inp = op.input("inp", flow, TestingSource(list(events), batch_size=1))
    split = op.branch("split", inp, lambda e: is_click(e))
    joined = running_join("join", split.trues, split.falses)
    op.output("out", joined, TestingSink(out))
    return flow


def run(events: Sequence[Event], workers: int = 1) -> list[JoinResult]:
    out: list[JoinResult] = []
    flow = build_flow(events, out)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, addresses=[], proc_id=0, worker_count_per_proc=workers)
    return out


def key(result: JoinResult):
    c = result.click
    return (c.topic, c.partition, c.offset)


def assert_same(actual: list[JoinResult], expected: list[JoinResult]) -> None:
    # Order across users is not defined (keys run on different workers).
    assert sorted(actual, key=key) == sorted(expected, key=key)


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def workers(request) -> int:
    return request.param


def test_profile_changing_between_two_clicks(workers):
    v1 = profile("alice", 1_000, "v1")
    c1 = click("alice", 2_000)
    v2 = profile("alice", 3_000, "v2")
    c2 = click("alice", 4_000)

    out = run([v1, c1, v2, c2], workers)

    # One result per click; the profile update alone emits nothing.
    assert out == [JoinResult(c1, v1), JoinResult(c2, v2)]


def test_click_before_any_profile_gets_none_then_later_clicks_match(workers):
    c1 = click("bob", 5_000)
    v1 = profile("bob", 1_000, "v1")  # older event time, but received later
    c2 = click("bob", 6_000)

    out = run([c1, v1, c2], workers)

    assert out == [JoinResult(c1, None), JoinResult(c2, v1)]


def test_processing_order_not_event_time(workers):
    # v2 has the later event time but arrives first: the latest *received* wins.
    v2 = profile("carol", 9_000, "v2")
    v1 = profile("carol", 1_000, "v1")
    c = click("carol", 10_000)

    out = run([v2, v1, c], workers)

    assert out == [JoinResult(c, v1)]


def test_unknown_user_gets_none(workers):
    v = profile("dave", 1_000, "v1")
    c = click("nobody", 2_000)

    out = run([v, c], workers)

    assert out == [JoinResult(c, None)]


def test_multiple_users_interleaved(workers):
    a1 = profile("alice", 1_000, "a1")
    b1 = profile("bob", 1_000, "b1")
    ca1 = click("alice", 2_000)
    cb1 = click("bob", 2_000)
    a2 = profile("alice", 3_000, "a2")
    cb2 = click("bob", 4_000, partition=1)
    ca2 = click("alice", 4_000, partition=1)
    cz = click("zed", 4_000)
    ca3 = click("alice", 5_000)

    out = run([a1, b1, ca1, cb1, a2, cb2, ca2, cz, ca3], workers)

    assert_same(
        out,
        [
            JoinResult(ca1, a1),
            JoinResult(cb1, b1),
            JoinResult(cb2, b1),
            JoinResult(ca2, a2),
            JoinResult(cz, None),
            JoinResult(ca3, a2),
        ],
    )
    # Within one user the order is the processing order.
    assert [r for r in out if r.click.key == "alice"] == [
        JoinResult(ca1, a1),
        JoinResult(ca2, a2),
        JoinResult(ca3, a2),
    ]


def test_consecutive_clicks_same_profile_each_emitted_once(workers):
    v = profile("erin", 1_000, "v1")
    cs = [click("erin", 2_000 + i) for i in range(3)]
    v2 = profile("erin", 9_000, "v2")  # after the last click: no extra result

    out = run([v, *cs, v2], workers)

    assert out == [JoinResult(c, v) for c in cs]


def reference(events: Sequence[Event]) -> list[JoinResult]:
    latest: dict = {}
    results = []
    for e in events:
        if not is_click(e):
            latest[e.key] = e
        else:
            results.append(JoinResult(e, latest.get(e.key)))
    return results


def test_random_interleaving_matches_reference(workers):
    rng = random.Random(7)
    users = [f"u{i}" for i in range(8)]
    events: list[Event] = []
    for i in range(300):
        user = rng.choice(users)
        if rng.random() < 0.3:
            events.append(profile(user, i, f"v{i}", partition=rng.randrange(2)))
        else:
            events.append(click(user, i, partition=rng.randrange(3)))

    out = run(events, workers)

    expected = reference(events)
    assert len(out) == sum(is_click(e) for e in events)
    assert_same(out, expected)
