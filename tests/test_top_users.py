"""Stories of the top-users job's operator: global top-N per tumbling window.

Times are seconds after T0 (2026-01-01T00:00:00Z, a window boundary); the
stories use 60 s windows so they read easily.
"""

from __future__ import annotations

from datetime import timedelta

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from operators.top_users import top_users
from story import CLICKS_TOPIC, T0, click, polls

WORKERS = [1, 2]


def run_top(batches, *, window_s=60, lateness_s=0, top_n=3, shards=4, workers=1):
    """Run the operator; return ([(window start s, [(user, clicks)...])], [late click names])."""
    flow = Dataflow("top_story")
    clicks = op.input("clicks", flow, TestingSource(batches))
    out = top_users(
        "top",
        clicks,
        window=timedelta(seconds=window_s),
        lateness=timedelta(seconds=lateness_s),
        top_n=top_n,
        shards=shards,
    )
    windows, late = [], []
    op.output("windows", out.windows, TestingSink(windows))
    op.output("late", out.late, TestingSink(late))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    tops = [
        ((w.window_start_ms - T0) // 1000, (w.window_end_ms - T0) // 1000, w.top)
        for ws in windows
        for w in ws
    ]
    late_clicks = [
        (orjson.loads(x.click.value)["name"], (x.window_start_ms - T0) // 1000) for xs in late for x in xs
    ]
    return tops, late_clicks


@pytest.mark.parametrize("workers", WORKERS)
def test_ties_are_broken_by_user_id_and_the_list_is_cut_at_top_n(workers):
    """Window [0, 60): ann 3 clicks, bob 2, cat 2, dan 1; TOP_N=3."""
    batches = polls(
        CLICKS_TOPIC,
        [click("cat", 1, "c1"), click("ann", 2, "a1"), click("dan", 3, "d1")],
        [click("bob", 4, "b1"), click("ann", 5, "a2"), click("cat", 6, "c2")],
        [click("bob", 7, "b2"), click("ann", 8, "a3")],
    )
    assert run_top(batches, workers=workers) == (
        [(0, 60, [("ann", 3), ("bob", 2), ("cat", 2)])],
        [],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_a_user_in_two_windows_counts_in_each_and_window_end_is_exclusive(workers):
    batches = polls(
        CLICKS_TOPIC,
        [click("eve", 10, "e1"), click("eve", 59.999, "e2"), click("eve", 60, "e3")],
        [click("fox", 61, "f1"), click("eve", 119, "e4")],
    )
    assert run_top(batches, workers=workers) == (
        [(0, 60, [("eve", 2)]), (60, 120, [("eve", 2), ("fox", 1)])],
        [],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_late_click_inside_lateness_counts_very_late_click_goes_to_late_output(workers):
    """Lateness 30 s: window [0, 60) closes once the watermark reaches 90.

    gus's click at t=50 arrives after t=80 was seen: late, but inside the
    lateness, so it is counted. hal's click at t=20 arrives after t=100 was
    seen: its window is closed and emitted, so it goes to the late output and
    the window is not emitted again.
    """
    batches = polls(
        CLICKS_TOPIC,
        [click("gus", 10, "g1")],
        [click("hal", 80, "h1")],
        [click("gus", 50, "g2-late-but-in-time")],
        [click("hal", 100, "h2")],
        [click("hal", 20, "h3-too-late")],
    )
    assert run_top(batches, lateness_s=30, workers=workers) == (
        [(0, 60, [("gus", 2)]), (60, 120, [("hal", 2)])],
        [("h3-too-late", 0)],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_top_n_is_global_across_partitions_and_shards(workers):
    """Two partitions, many shards: users spread everywhere, one global ranking."""
    p0 = [click(f"user{i:02d}", 1, f"p0-{i}-{k}", partition=0) for i in range(20) for k in range(i % 5)]
    p1 = [click(f"user{i:02d}", 2, f"p1-{i}", partition=1) for i in range(20)]
    batches = polls(CLICKS_TOPIC, p0, partition=0, partitions=2) + polls(
        CLICKS_TOPIC, p1, partition=1, partitions=2
    )
    # user i has (i % 5) + 1 clicks: 5 for i = 4, 9, 14, 19.
    expected = [(0, 60, [("user04", 5), ("user09", 5), ("user14", 5), ("user19", 5), ("user03", 4)])]
    assert run_top(batches, top_n=5, shards=8, workers=workers) == (expected, [])


def test_a_window_waits_for_every_partition():
    """Partition 1 is behind: window [0, 60) is not final until it catches up;
    its late-arriving clicks are counted, not late."""
    batches = [
        *polls(
            CLICKS_TOPIC,
            [click("ivy", 5, "i1", partition=0), click("ivy", 500, "i2", partition=0)],
            partition=0,
            partitions=2,
            end=False,
        ),
        TestingSource.PAUSE(timedelta(seconds=0.3)),
        *polls(
            CLICKS_TOPIC,
            [click("jon", 7, "j1", partition=1)],
            [click("jon", 8, "j2", partition=1)],
            partition=1,
            partitions=2,
        ),
        *polls(CLICKS_TOPIC, [], partition=0, partitions=2),
    ]
    assert run_top(batches, workers=1) == (
        [(0, 60, [("jon", 2), ("ivy", 1)]), (480, 540, [("ivy", 1)])],
        [],
    )
