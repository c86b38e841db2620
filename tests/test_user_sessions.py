"""Stories of the user-sessions operator: per-user session windows whose state is freed.

Times are seconds after T0. Results read as ``(user, start s, end s, clicks)``
for sessions and ``(click name, window start s, window end s)`` for late
clicks, both sorted (shards emit in no particular order).
"""

from __future__ import annotations

from datetime import timedelta

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from operators.progress import CLICKS, ShardInput
from operators.records import END_OF_TIME_MS, PartitionStatus
from operators.user_sessions import SessionsLogic, user_sessions
from story import CLICKS_TOPIC, T0, click, polls

WORKERS = [1, 2]


def secs(ms: int) -> float:
    return (ms - T0) / 1000


def run_sessions(batches, *, gap_s=10, lateness_s=0, shards=4, workers=1):
    """Run the operator; return (sorted sessions, sorted late clicks)."""
    flow = Dataflow("sessions_story")
    clicks = op.input("clicks", flow, TestingSource(batches))
    out = user_sessions(
        "sessions",
        clicks,
        gap=timedelta(seconds=gap_s),
        lateness=timedelta(seconds=lateness_s),
        shards=shards,
    )
    sessions, late = [], []
    op.output("sessions_out", out.sessions, TestingSink(sessions))
    op.output("late_out", out.late, TestingSink(late))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    closed = sorted((s.key, secs(s.start_ms), secs(s.end_ms), s.clicks) for ss in sessions for s in ss)
    late_clicks = sorted(
        (orjson.loads(x.click.value)["name"], secs(x.window_start_ms), secs(x.window_end_ms))
        for xs in late
        for x in xs
    )
    return closed, late_clicks


@pytest.mark.parametrize("workers", WORKERS)
def test_a_gap_longer_than_the_session_gap_splits_a_session(workers):
    """Gap 10 s: ann's clicks at 0 and 4, then 11 s of silence, then 15 and 20."""
    batches = polls(
        CLICKS_TOPIC,
        [click("ann", 0, "a0"), click("ann", 4, "a4")],
        [click("ann", 15, "a15"), click("ann", 20, "a20")],
    )
    assert run_sessions(batches, workers=workers) == (
        [("ann", 0, 4, 2), ("ann", 15, 20, 2)],
        [],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_clicks_exactly_gap_apart_stay_in_one_session(workers):
    """Gap 10 s: 0, 10, 20 are one session; 30.5 (10.5 s later) starts another."""
    batches = polls(
        CLICKS_TOPIC,
        [click("bob", 0, "b0"), click("bob", 10, "b10")],
        [click("bob", 20, "b20")],
        [click("bob", 30.5, "b30.5")],
    )
    assert run_sessions(batches, workers=workers) == (
        [("bob", 0, 20, 3), ("bob", 30.5, 30.5, 1)],
        [],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_interleaved_users_have_independent_sessions(workers):
    """ann and bob click in the same batches and partitions; each has their own gaps."""
    p0 = polls(
        CLICKS_TOPIC,
        [click("ann", 0, "a0"), click("bob", 2, "b2")],
        [click("ann", 8, "a8"), click("bob", 15, "b15")],
        partition=0,
        partitions=2,
    )
    p1 = polls(
        CLICKS_TOPIC,
        [click("ann", 17, "a17", partition=1), click("bob", 20, "b20", partition=1)],
        [click("ann", 40, "a40", partition=1), click("bob", 25, "b25", partition=1)],
        partition=1,
        partitions=2,
    )
    # ann: 0, 8, 17 (gaps 8, 9) | 40.   bob: 2 | 15, 20, 25 (gap 13, then 5, 5).
    assert run_sessions(p0 + p1, lateness_s=60, workers=workers) == (
        [("ann", 0, 17, 3), ("ann", 40, 40, 1), ("bob", 2, 2, 1), ("bob", 15, 25, 3)],
        [],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_an_out_of_order_click_inside_lateness_merges_two_open_sessions(workers):
    """Gap 10 s, lateness 30 s. cat's clicks at 0 and 20 are two open sessions
    until her click at 10 arrives (watermark 19): 10 s from each, it bridges
    them into one. dan's click at 3 arrives after his click at 12 and extends
    his session backwards."""
    batches = polls(
        CLICKS_TOPIC,
        [click("cat", 0, "c0"), click("cat", 20, "c20"), click("dan", 12, "d12")],
        [click("cat", 10, "c10-out-of-order"), click("dan", 3, "d3-out-of-order")],
    )
    assert run_sessions(batches, lateness_s=30, workers=workers) == (
        [("cat", 0, 20, 3), ("dan", 3, 12, 2)],
        [],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_very_late_clicks_go_to_late_output_and_never_reopen_a_session(workers):
    """Gap 10 s, lateness 5 s: a session closes once the watermark reaches end + 15.

    * [0, 5] closes when d25 is read (watermark 24). d14 would have joined it
      (14 <= 5 + 10): late, window [0, 15); the session is not emitted again.
    * d16 is newer than the closed session's reach: it joins d25's session.
    * d2 arrives at watermark 59: any session it could start is already
      closed (2 + 15 <= 59): late, window [2, 12).
    """
    batches = polls(
        CLICKS_TOPIC,
        [click("dan", 0, "d0"), click("dan", 5, "d5")],
        [click("dan", 25, "d25")],
        [click("dan", 14, "d14-too-late")],
        [click("dan", 16, "d16")],
        [click("dan", 60, "d60")],
        [click("dan", 2, "d2-too-late")],
    )
    assert run_sessions(batches, lateness_s=5, workers=workers) == (
        [("dan", 0, 5, 2), ("dan", 16, 25, 2), ("dan", 60, 60, 1)],
        [("d14-too-late", 0, 15), ("d2-too-late", 2, 12)],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_a_late_click_reports_the_closed_session_it_would_have_joined(workers):
    """Gap 10 s, lateness 5 s: fay's sessions [0, 0] and [20, 20] are closed when
    f36 is read (watermark 35). f12 would have extended [20, 20] backwards:
    window [20, 30). f3 would have joined [0, 0], which is no longer
    remembered: window [3, 13), not [20, 30)."""
    batches = polls(
        CLICKS_TOPIC,
        [click("fay", 0, "f0"), click("fay", 20, "f20")],
        [click("fay", 36, "f36")],
        [click("fay", 12, "f12-too-late")],
        [click("fay", 3, "f3-too-late")],
    )
    assert run_sessions(batches, lateness_s=5, workers=workers) == (
        [("fay", 0, 0, 1), ("fay", 20, 20, 1), ("fay", 36, 36, 1)],
        [("f12-too-late", 20, 30), ("f3-too-late", 3, 13)],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_a_click_inside_a_long_open_session_is_never_late(workers):
    """Gap 10 s, lateness 0: eve's session runs from 0 to 40. A click at 12 read
    at watermark 39 is far behind, but it lies inside her open session, so it
    is counted (it cannot belong to a closed session)."""
    batches = polls(
        CLICKS_TOPIC,
        [click("eve", t, f"e{t}") for t in (0, 8, 16, 24, 32, 40)],
        [click("eve", 12, "e12-behind")],
    )
    assert run_sessions(batches, workers=workers) == ([("eve", 0, 40, 7)], [])


def test_a_session_waits_for_every_partition():
    """Partition 1 is behind: gus's session [0, ...] stays open until it catches
    up, so his click at 5 from there joins it instead of being late."""
    batches = [
        *polls(
            CLICKS_TOPIC,
            [click("gus", 0, "g0", partition=0), click("gus", 500, "g500", partition=0)],
            partition=0,
            partitions=2,
            end=False,
        ),
        TestingSource.PAUSE(timedelta(seconds=0.3)),
        *polls(CLICKS_TOPIC, [click("gus", 5, "g5", partition=1)], partition=1, partitions=2),
        *polls(CLICKS_TOPIC, [], partition=0, partitions=2),
    ]
    assert run_sessions(batches, workers=1) == (
        [("gus", 0, 5, 2), ("gus", 500, 500, 1)],
        [],
    )


# -- one shard driven directly -------------------------------------------------


def progress(up_to_s: float, items=()) -> ShardInput:
    """A READING poll of partition 0 whose newest event time is ``up_to_s``: watermark just below it."""
    return ShardInput(CLICKS, 0, 1, list(items), T0 + int(up_to_s * 1000), PartitionStatus.READING, 0)


def emitted(logic: SessionsLogic, inp: ShardInput):
    """(sessions, late click names) of one activation."""
    out, discard = logic.on_batch([inp])
    assert discard is False
    items = [item for batch in out for _, item in batch]
    sessions = [(s.key, secs(s.start_ms), secs(s.end_ms), s.clicks) for s in items if hasattr(s, "clicks")]
    late = [orjson.loads(x.click.value)["name"] for x in items if hasattr(x, "watermark_ms")]
    return sessions, late


def test_state_is_freed_after_sessions_close_and_markers_expire():
    """Gap 10 s, lateness 5 s: a session closes at end + 15, its marker goes at end + 25."""
    logic = SessionsLogic(gap_ms=10_000, lateness_ms=5_000, state=None)
    clicks = [click("a", 0, "a0"), click("a", 5, "a5"), click("b", 3, "b3"), click("a", 18, "a18")]
    # watermark 17.999: a has [0, 5] and [18, 18]; b has [3, 3]
    assert emitted(logic, progress(18, clicks)) == ([], [])
    assert logic.state_size() == (2, 3, 0)

    # watermark 20.999: b (closes at 18) and a's first session (20) close
    assert emitted(logic, progress(21)) == ([("b", 3, 3, 1), ("a", 0, 5, 2)], [])
    assert logic.state_size() == (1, 1, 2)
    # a click within reach of a's closed session is late; one past it is not
    assert emitted(logic, progress(21, [click("a", 14, "a14-late")])) == ([], ["a14-late"])
    assert logic.state_size() == (1, 1, 2)

    # watermark 28.999: b's marker (3 + 25 = 28) is dropped, a's (5 + 25 = 30) kept
    assert emitted(logic, progress(29)) == ([], [])
    assert logic.state_size() == (1, 1, 1)

    # watermark 32.999: a's second session closes at 33 (not yet); at 33.999 it does
    assert emitted(logic, progress(33)) == ([], [])
    assert emitted(logic, progress(34)) == ([("a", 18, 18, 1)], [])
    assert logic.state_size() == (0, 0, 1)

    # watermark 43: a's last marker (18 + 25 = 43) goes: nothing is left at all
    assert emitted(logic, progress(43.001)) == ([], [])
    assert logic.state_size() == (0, 0, 0)
    assert logic.close_heap == [] and logic.marker_heap == [] and logic.due == {}

    # a very late click is still reported (by the watermark rule) and keeps no state
    assert emitted(logic, progress(43.001, [click("a", 10, "a10-late")])) == ([], ["a10-late"])
    assert logic.state_size() == (0, 0, 0)


def test_end_of_input_closes_everything_and_keeps_no_marker():
    logic = SessionsLogic(gap_ms=10_000, lateness_ms=5_000, state=None)
    emitted(logic, progress(1, [click("a", 0, "a0"), click("b", 1, "b1")]))
    out, _ = logic.on_batch([ShardInput(CLICKS, 0, 1, [], None, PartitionStatus.FINISHED, 0)])
    assert sorted(s.key for _, s in out[0]) == ["a", "b"]
    assert logic.clicks.watermark == END_OF_TIME_MS
    assert logic.state_size() == (0, 0, 0)
    assert logic.close_heap == [] and logic.marker_heap == []


def test_extending_a_session_does_not_grow_the_close_heap():
    """Lazy invalidation: one heap entry per user however often the session grows."""
    logic = SessionsLogic(gap_ms=10_000, lateness_ms=0, state=None)
    for t in range(0, 1000, 5):
        emitted(logic, progress(t + 1, [click("a", t, f"a{t}")]))
    assert logic.state_size() == (1, 1, 0)
    assert len(logic.close_heap) == 1
    assert emitted(logic, progress(1010)) == ([("a", 0, 995, 200)], [])
    assert logic.close_heap == [] and logic.state_size() == (0, 0, 1)


def test_an_out_of_order_click_that_starts_an_earlier_session_closes_on_its_own_time():
    """Gap 10 s, lateness 40 s: a20 arrives after a50 and starts a session before
    it; [20, 20] closes at 70, on its own, not with [50, 50] at 100."""
    logic = SessionsLogic(gap_ms=10_000, lateness_ms=40_000, state=None)
    assert emitted(logic, progress(50, [click("a", 50, "a50")])) == ([], [])
    assert emitted(logic, progress(50, [click("a", 20, "a20")])) == ([], [])
    assert logic.state_size() == (1, 2, 0)
    assert emitted(logic, progress(71)) == ([("a", 20, 20, 1)], [])
    # [20, 20] is closed: a25 would have joined it
    assert emitted(logic, progress(71, [click("a", 25, "a25-late")])) == ([], ["a25-late"])
    assert emitted(logic, progress(101)) == ([("a", 50, 50, 1)], [])


def test_snapshot_is_an_immutable_copy_and_restores_the_same_behaviour():
    logic = SessionsLogic(gap_ms=10_000, lateness_ms=5_000, state=None)
    emitted(logic, progress(20, [click("a", 0, "a0"), click("a", 20, "a20"), click("b", 19, "b19")]))
    # watermark 19.999: a's [0, 0] closed (marker kept), a's [20, 20] and b open
    snap = logic.snapshot()
    assert snap == logic.snapshot()
    assert logic.state_size() == (2, 2, 1)
    # changing the original afterwards does not change the snapshot
    emitted(logic, progress(21, [click("a", 21, "a21")]))
    assert logic.snapshot() != snap
    restored = SessionsLogic(10_000, 5_000, snap)
    assert restored.snapshot() == snap
    assert restored.state_size() == (2, 2, 1)
    assert emitted(restored, progress(21, [click("a", 9, "a9-late"), click("a", 21, "a21")])) == (
        [],
        ["a9-late"],
    )
    assert emitted(restored, progress(60)) == ([("b", 19, 19, 1), ("a", 20, 21, 2)], [])


def _model(arrivals, gap_ms, lateness_ms):
    """The semantics restated by brute force: (sessions, late click names) for
    clicks read one per poll in ``arrivals`` order (watermark = newest - 1 ms)."""
    open_clicks = {}  # user -> event times not in a closed session
    reach = {}  # user -> end + gap of the user's last closed session
    sessions, late = [], []
    watermark = -(2**62)
    newest = None
    for c in arrivals:
        t, times = c.ts_ms, open_clicks.setdefault(c.key, [])
        spans = _split(sorted(times), gap_ms)
        joins = any(s - gap_ms <= t <= e + gap_ms for s, e, _ in spans)
        if t <= reach.get(c.key, -(2**62)):
            late.append(orjson.loads(c.value)["name"])
        elif times and t >= min(times) and joins:
            times.append(t)
        elif t + gap_ms + lateness_ms <= watermark:
            late.append(orjson.loads(c.value)["name"])
        else:
            times.append(t)
        newest = t if newest is None else max(newest, t)
        watermark = newest - 1
        for user, times in open_clicks.items():
            for s, e, n in _split(sorted(times), gap_ms):
                if e + gap_ms + lateness_ms <= watermark:
                    sessions.append((user, secs(s), secs(e), n))
                    reach[user] = e + gap_ms
                    times[:] = [x for x in times if x > e]
    for user, times in open_clicks.items():
        sessions += [(user, secs(s), secs(e), n) for s, e, n in _split(sorted(times), gap_ms)]
    return sorted(sessions), sorted(late)


def _split(times, gap_ms):
    out = []
    for t in times:
        if out and t - out[-1][1] <= gap_ms:
            out[-1] = (out[-1][0], t, out[-1][2] + 1)
        else:
            out.append((t, t, 1))
    return out


@pytest.mark.parametrize("lateness_s", [0, 5, 40])
@pytest.mark.parametrize("seed", range(20))
def test_shard_agrees_with_a_brute_force_model_on_random_disorder(seed, lateness_s):
    """Random clicks of three users, read out of order: same sessions, same late clicks,
    and nothing left once the input ends."""
    import random

    rng = random.Random(seed)
    events = sorted(rng.uniform(0, 300) for _ in range(60))
    arrivals = [click(rng.choice("xyz"), round(t, 1), f"c{i}") for i, t in enumerate(events)]
    for _ in range(25):  # displace some clicks, a few by a lot
        i = rng.randrange(len(arrivals))
        j = min(len(arrivals) - 1, i + rng.choice([1, 2, 3, 10, 30]))
        arrivals.insert(j, arrivals.pop(i))
    logic = SessionsLogic(gap_ms=10_000, lateness_ms=lateness_s * 1000, state=None)
    sessions, late, newest = [], [], None
    for c in arrivals:
        newest = c.ts_ms if newest is None else max(newest, c.ts_ms)
        poll = ShardInput(CLICKS, 0, 1, [c], newest, PartitionStatus.READING, 0)
        closed, late_names = emitted(logic, poll)
        sessions += closed
        late += late_names
    out, _ = logic.on_batch([ShardInput(CLICKS, 0, 1, [], None, PartitionStatus.FINISHED, 0)])
    sessions += [(s.key, secs(s.start_ms), secs(s.end_ms), s.clicks) for batch in out for _, s in batch]
    assert (sorted(sessions), sorted(late)) == _model(arrivals, 10_000, lateness_s * 1000)
    assert logic.state_size() == (0, 0, 0)
    assert sum(n for *_, n in sessions) + len(late) == len(arrivals)
