"""Stories of the click-rate alerts operator: per-user sliding-window counts above a threshold.

Times are seconds after T0 (2026-01-01T00:00:00Z, on every window grid). The
stories use 60 s windows sliding every 10 s and a threshold of 3 clicks, so a
click at t is in the six windows starting at the multiples of 10 in (t-60, t].

Late-click stories advance the watermark with a click of the *same* user: a
shard learns of other shards' progress only through the router's throttled
broadcasts (every 0.1 s per partition), so only same-shard progress is
timing-independent. The one story that relies on another user's progress
pauses the input to let the broadcast through.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from datetime import timedelta

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from conftest import ROOT
from dataflows.alerts import alert_message, check_windows
from dataflows.settings import AlertsSettings, ConfigError, load_settings
from operators.click_alerts import RateAlert, RateCountLogic, click_alerts
from operators.progress import CLICKS, ShardInput
from operators.records import PartitionStatus
from story import CLICKS_TOPIC, T0, click, polls

WORKERS = [1, 2]


def run_alerts(batches, *, window_s=60, slide_s=10, threshold=3, lateness_s=0, shards=4, workers=1):
    """Run the operator; return (sorted [(user, start s, end s, clicks)], sorted [(click name, missed start s, end s, watermark ms)])."""
    flow = Dataflow("alerts_story")
    clicks = op.input("clicks", flow, TestingSource(batches))
    out = click_alerts(
        "rates",
        clicks,
        window=timedelta(seconds=window_s),
        slide=timedelta(seconds=slide_s),
        threshold=threshold,
        lateness=timedelta(seconds=lateness_s),
        shards=shards,
    )
    alerts, late = [], []
    op.output("alerts", out.alerts, TestingSink(alerts))
    op.output("late", out.late, TestingSink(late))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    got = [
        (a.key, (a.window_start_ms - T0) / 1000, (a.window_end_ms - T0) / 1000, a.clicks)
        for xs in alerts
        for a in xs
    ]
    late_clicks = [
        (
            orjson.loads(x.click.value)["name"],
            (x.window_start_ms - T0) / 1000,
            (x.window_end_ms - T0) / 1000,
            x.watermark_ms - T0,
        )
        for xs in late
        for x in xs
    ]
    return sorted(got), sorted(late_clicks)


def ann(at_s, name=None):
    return click("ann", at_s, name or f"a{at_s:g}")


@pytest.mark.parametrize("workers", WORKERS)
def test_a_burst_alerts_for_exactly_the_windows_holding_more_than_the_threshold(workers):
    """Clicks at 95, 99, 102, 106, 110 (15 s). Counts per window start:
    40: 2, 50: 4, 60-90: 5, 100: 3 (= threshold: no alert), 110: 1."""
    batches = polls(CLICKS_TOPIC, [ann(95), ann(99), ann(102)], [ann(106), ann(110)])
    assert run_alerts(batches, workers=workers) == (
        [
            ("ann", 50, 110, 4),
            ("ann", 60, 120, 5),
            ("ann", 70, 130, 5),
            ("ann", 80, 140, 5),
            ("ann", 90, 150, 5),
        ],
        [],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_a_user_at_the_threshold_gets_no_alert_and_window_end_is_exclusive(workers):
    """Clicks at 0, 20, 40, 60: [0, 60) and [10, 70) hold 3 each (60 is not in [0, 60))."""
    batches = polls(CLICKS_TOPIC, [ann(0), ann(20)], [ann(40), ann(60)])
    assert run_alerts(batches, workers=workers) == ([], [])


@pytest.mark.parametrize("workers", WORKERS)
def test_two_users_on_two_partitions_only_the_burster_alerts(workers):
    """bob clicks 4 times within 3 s on partition 1; ann clicks every 20 s on
    partition 0 (at most 3 per 60 s). Each partition is in event-time order."""
    p0 = [click("ann", t, f"a{t}", partition=0) for t in range(0, 200, 20)]
    p1 = [click("bob", t, f"b{t}", partition=1) for t in (30, 31, 32, 33)] + [
        click("bob", 150, "b150", partition=1)
    ]
    batches = polls(CLICKS_TOPIC, p0[:5], p0[5:], partition=0, partitions=2) + polls(
        CLICKS_TOPIC, p1[:2], p1[2:], partition=1, partitions=2
    )
    assert run_alerts(batches, workers=workers) == (
        [("bob", start, start + 60, 4) for start in (-20, -10, 0, 10, 20, 30)],
        [],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_a_late_click_inside_the_lateness_is_counted(workers):
    """Lateness 30 s. After ann's click at 130 the watermark is 129.999, so
    windows ending at or before 90 are closed; the click at 95 (windows 40-90,
    ending 100-150) arrives after that but is in time and counted.

    Without it: 50-70 hold 3 (no alert). With it: 50-70 hold 4.
    """
    batches = polls(CLICKS_TOPIC, [ann(100), ann(101), ann(102)], [ann(130)], [ann(95, "in-time")])
    assert run_alerts(batches, lateness_s=30, workers=workers) == (
        [
            ("ann", 50, 110, 4),
            ("ann", 60, 120, 4),
            ("ann", 70, 130, 4),
            ("ann", 80, 140, 5),
            ("ann", 90, 150, 5),
            ("ann", 100, 160, 4),
        ],
        [],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_a_very_late_click_is_reported_late_and_no_alert_is_emitted_again(workers):
    """Lateness 30 s. Clicks at 70-73 make windows 20-70 alert with 4 each; the
    click at 200 closes all of them (closed through 160). The click at 74
    belongs only to closed windows: reported late naming [20, 80), not
    counted, and no window is emitted a second time."""
    batches = polls(CLICKS_TOPIC, [ann(70), ann(71), ann(72), ann(73)], [ann(200)], [ann(74, "too-late")])
    assert run_alerts(batches, lateness_s=30, workers=workers) == (
        [("ann", start, start + 60, 4) for start in (20, 30, 40, 50, 60, 70)],
        [("too-late", 20, 80, 199_999)],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_a_click_late_for_some_windows_is_still_counted_in_the_open_ones(workers):
    """Lateness 30 s. Clicks at 100-103; the click at 150 closes through 110, so
    [50, 110) is emitted with 4. The click at 104 (windows 50-100) is reported
    late for [50, 110) and counted in 60-100: they alert with 5, and 100 (which
    also holds 150) with 6. [50, 110) is not emitted again."""
    batches = polls(
        CLICKS_TOPIC,
        [ann(100), ann(101), ann(102), ann(103)],
        [ann(150)],
        [ann(104, "partly-late")],
    )
    assert run_alerts(batches, lateness_s=30, workers=workers) == (
        [
            ("ann", 50, 110, 4),
            ("ann", 60, 120, 5),
            ("ann", 70, 130, 5),
            ("ann", 80, 140, 5),
            ("ann", 90, 150, 5),
            ("ann", 100, 160, 6),
        ],
        [("partly-late", 50, 110, 149_999)],
    )


@pytest.mark.parametrize("workers", WORKERS)
def test_another_users_clicks_close_a_quiet_users_windows(workers):
    """The watermark is the input's, not the user's: bob's click at 200 (another
    shard) closes ann's windows, so her click at 74 is late. The pause lets the
    router's throttled progress broadcast reach ann's shard."""
    batches = [
        *polls(CLICKS_TOPIC, [ann(70), ann(71), ann(72), ann(73)], end=False),
        TestingSource.PAUSE(timedelta(seconds=0.2)),
        *polls(CLICKS_TOPIC, [click("bob", 200, "b200")], end=False),
        *polls(CLICKS_TOPIC, [ann(74, "too-late")]),
    ]
    assert run_alerts(batches, lateness_s=30, workers=workers) == (
        [("ann", start, start + 60, 4) for start in (20, 30, 40, 50, 60, 70)],
        [("too-late", 20, 80, 199_999)],
    )


def test_a_window_as_long_as_the_slide_is_tumbling():
    batches = polls(CLICKS_TOPIC, [ann(t) for t in (5, 6, 7, 8, 15, 16)])
    assert run_alerts(batches, window_s=10, slide_s=10, threshold=3) == ([("ann", 0, 10, 4)], [])


@pytest.mark.parametrize(
    "window_s,slide_s,message",
    [
        (60, 7, "window must be a whole multiple of slide (got 60000 ms and 7000 ms)"),
        (60, 0, "window and slide must be at least 1 ms"),
        (0, 10, "window and slide must be at least 1 ms"),
    ],
)
def test_bad_window_and_slide_are_rejected(window_s, slide_s, message):
    with pytest.raises(ValueError) as info:
        click_alerts(
            "alerts",
            op.input("in", Dataflow("bad"), TestingSource([])),
            window=timedelta(seconds=window_s),
            slide=timedelta(seconds=slide_s),
            threshold=3,
            lateness=timedelta(0),
        )
    assert message in str(info.value)


def _shard_input(*clicks, status=PartitionStatus.READING):
    return ShardInput(CLICKS, 0, 1, list(clicks), max((c.ts_ms for c in clicks), default=None), status, T0)


def test_snapshot_is_an_immutable_copy_that_resumes_exactly():
    """Recovery pickles the snapshot later: later items must not change it, and
    a logic rebuilt from it must produce what the original does."""
    new = lambda state: RateCountLogic(60_000, 10_000, 0, 1, state)  # noqa: E731
    first = new(None)
    first.on_batch([_shard_input(ann(10), ann(11), ann(70))])
    snap = first.snapshot()
    frozen = pickle.dumps(snap)
    rest = [_shard_input(ann(72), ann(12)), _shard_input(status=PartitionStatus.FINISHED)]
    original = [first.on_batch([x]) for x in rest]
    assert pickle.dumps(snap) == frozen
    resumed = new(pickle.loads(frozen))
    assert [resumed.on_batch([x]) for x in rest] == original
    # 12 is late for [-40, 20) .. [0, 60) (closed through 60) but counted in [10, 70).
    items = [item for out, _ in original for emitted in out for _, item in emitted]
    assert [(x.click.ts_ms - T0, x.window_start_ms - T0) for x in items if not isinstance(x, RateAlert)] == [
        (12_000, -40_000)
    ]
    assert [x for x in items if isinstance(x, RateAlert)] == [
        RateAlert("ann", T0 + s * 1000, T0 + (s + 60) * 1000, n)
        for s, n in ((10, 3), (20, 2), (30, 2), (40, 2), (50, 2), (60, 2), (70, 2))
    ]


def test_alert_message_encoding():
    msg = alert_message(RateAlert("u1", T0 + 10_000, T0 + 70_000, 137), "click_alerts")
    assert msg.topic == "click_alerts" and msg.key == b"u1" and msg.headers is None
    assert orjson.loads(msg.value) == {
        "user_id": "u1",
        "window_start": "2026-01-01T00:00:10.000+00:00",
        "window_end": "2026-01-01T00:01:10.000+00:00",
        "clicks": 137,
    }


@pytest.mark.parametrize(
    "env,message",
    [
        (
            {"RATE_SLIDE_SECONDS": "7"},
            "RATE_WINDOW_SECONDS: must be a whole multiple of RATE_SLIDE_SECONDS (got 60 and 7)",
        ),
        ({"RATE_WINDOW_SECONDS": "0.0015"}, "RATE_WINDOW_SECONDS: must be a whole number of milliseconds"),
    ],
)
def test_window_settings_are_checked(env, message):
    settings, _ = load_settings(AlertsSettings, env)
    with pytest.raises(ConfigError) as info:
        check_windows(settings)
    assert str(info.value).startswith("invalid configuration:\n  " + message)
    check_windows(
        load_settings(AlertsSettings, {"RATE_WINDOW_SECONDS": "0.9", "RATE_SLIDE_SECONDS": "0.3"})[0]
    )


def test_the_job_exits_with_one_clear_message_when_the_window_is_not_a_multiple_of_the_slide():
    """`python -m bytewax.run dataflows.alerts` with RATE_SLIDE_SECONDS=7 (window 60)."""
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.alerts"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "RATE_SLIDE_SECONDS": "7"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    # Only the message: no traceback, no log line, no librdkafka connection noise.
    assert proc.stderr.strip() == (
        "invalid configuration:\n  RATE_WINDOW_SECONDS: must be a whole multiple of "
        "RATE_SLIDE_SECONDS (got 60 and 7)"
    )
