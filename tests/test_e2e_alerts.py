"""End to end on the real broker: deterministic clicks -> ``python -m bytewax.run
dataflows.alerts`` (KAFKA_TAIL=false) -> alerts, late and DLQ topics read back.

The expected alerts are computed here by brute force (every window start on
the slide grid, every click counted), independently of the package's
operators. Clicks are produced in event-time order and keyed by user, so each
partition is in order: with KAFKA_TAIL=false no click can be late, even with
ALLOWED_LATENESS_SECONDS=0.
"""

from __future__ import annotations

import os
import random
import subprocess
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
from confluent_kafka import Producer

from clickstream.read_topic import read_all
from conftest import ROOT, job_command

pytestmark = pytest.mark.broker

WINDOW_S, SLIDE_S, THRESHOLD = 60, 10, 10
#: 2026-06-01T00:00:00Z: in the past, so no event time is "too far in the future".
START_MS = 1_780_272_000_000
BOT = 4242  # an integer user id: normalised to "4242" in the output


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


class Click:
    """One produced click: user id as the job must report it, event time, message."""

    def __init__(self, user, ts_ms: int, rng: random.Random):
        self.user = str(user)
        self.ts_ms = ts_ms
        self.key = self.user.encode()
        body = {"user_id": user, "page": f"/p/{rng.randint(1, 99)}"}
        self.timestamp_ms: int | None = None
        fmt = rng.random()
        if fmt < 0.7:
            body["ts"] = ts_ms
        elif fmt < 0.9:
            body["ts"] = iso(ts_ms)
        else:
            self.timestamp_ms = ts_ms  # no "ts": the message timestamp is the event time
        self.value = orjson.dumps(body)


def make_clicks() -> list[Click]:
    """~2000 clicks over 20 minutes, in event-time order.

    40 ordinary users (about 2 clicks a minute each), a bot bursting 15-30
    clicks within a few seconds now and then, and a "steady" user clicking
    every 6 s: exactly THRESHOLD clicks in every full window, never an alert.
    """
    rng = random.Random(20260601)
    span_ms = 20 * 60_000
    events: list[tuple[int, object]] = []
    for _ in range(1600):
        events.append((START_MS + rng.randrange(span_ms), f"u{rng.randint(1, 40):02d}"))
    for burst_at in (90_000, 95_000, 400_000, 1_000_000):
        base = START_MS + burst_at + rng.randrange(1000)
        for _ in range(rng.randint(15, 30)):
            events.append((base + rng.randrange(4000), BOT))
    for k in range(150):
        events.append((START_MS + 1_234 + 6_000 * k, "steady"))
    events.sort(key=lambda e: (e[0], str(e[1])))
    return [Click(user, ts, rng) for ts, user in events]


#: (key, value, expected dlq.reason) of the bad records mixed into the input.
BAD_RECORDS = [
    (b"u01", b'{"user_id": "u01", "ts": 17', "invalid_json"),
    (None, orjson.dumps({"page": "/", "ts": START_MS}), "missing_user_id"),
    (b"u02", orjson.dumps({"user_id": True, "ts": START_MS}), "invalid_user_id"),
    (b"u03", orjson.dumps({"user_id": "u03", "ts": "2026-06-01T00:00:00"}), "invalid_time"),
    (b"u04", orjson.dumps(["u04", START_MS]), "not_an_object"),
    (b"u05", None, "empty_value"),
]


def expected_alerts(clicks: list[Click]) -> Counter:
    """Brute force: every window on the slide grid that can hold a click, counted in full."""
    window_ms, slide_ms = WINDOW_S * 1000, SLIDE_S * 1000
    by_user: dict[str, list[int]] = {}
    for c in clicks:
        by_user.setdefault(c.user, []).append(c.ts_ms)
    out: Counter = Counter()
    for user, times in by_user.items():
        first = min(times) - window_ms
        first -= first % slide_ms
        for start in range(first, max(times) + 1, slide_ms):
            n = sum(1 for t in times if start <= t < start + window_ms)
            if n > THRESHOLD:
                value = {
                    "user_id": user,
                    "window_start": iso(start),
                    "window_end": iso(start + window_ms),
                    "clicks": n,
                }
                out[(user.encode(), canonical(value))] += 1
    return out


def canonical(obj) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


@pytest.fixture(scope="module")
def inputs(broker):
    """A 3-partition clicks topic holding the clicks and the bad records (shared by every run)."""
    topic = f"e2e_alert_clicks_{os.urandom(3).hex()}"
    broker.create_topics({topic: 3})
    clicks = make_clicks()
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True})
    failures = []
    report = lambda err, _msg: err is not None and failures.append(err)  # noqa: E731
    bad_at = {len(clicks) * (i + 1) // (len(BAD_RECORDS) + 1): bad for i, bad in enumerate(BAD_RECORDS)}
    for i, c in enumerate(clicks):
        if i in bad_at:
            key, value, _ = bad_at[i]
            producer.produce(topic, value, key, on_delivery=report)
        kwargs = {} if c.timestamp_ms is None else {"timestamp": c.timestamp_ms}
        producer.produce(topic, c.value, c.key, on_delivery=report, **kwargs)
        producer.poll(0)
    assert producer.flush(15) == 0 and not failures
    return topic, clicks


def run_alerts_job(broker, env_overrides: dict, workers: int) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TAIL": "false",
        "RATE_WINDOW_SECONDS": str(WINDOW_S),
        "RATE_SLIDE_SECONDS": str(SLIDE_S),
        "ALERT_THRESHOLD": str(THRESHOLD),
        "ALLOWED_LATENESS_SECONDS": "0",
        # Small batches: windows close while the input is read, not only at its end.
        "SOURCE_BATCH_SIZE": "50",
        "STATE_SHARDS": "8",
        **env_overrides,
    }
    proc = subprocess.run(
        job_command("alerts", "-w", str(workers)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.parametrize("workers", [1, 2])
def test_alerts_job_writes_exactly_the_expected_alerts(broker, inputs, topic_names, workers):
    topic, clicks = inputs
    out = topic_names("alerts", "late", "dlq")
    broker.create_topics({out["alerts"]: 2, out["late"]: 1, out["dlq"]: 1})
    run_alerts_job(
        broker,
        {
            "CLICKS_TOPIC": topic,
            "ALERTS_TOPIC": out["alerts"],
            "LATE_TOPIC": out["late"],
            "DLQ_TOPIC": out["dlq"],
        },
        workers,
    )

    alerts: Counter = Counter()
    for rec in read_all(broker.bootstrap_servers, out["alerts"]):
        alerts[(rec.key, canonical(orjson.loads(rec.value)))] += 1
    expected = expected_alerts(clicks)
    assert alerts == expected
    # The data is not trivial: the bot alerts in several windows, the steady
    # user (exactly THRESHOLD per window) never does.
    users = Counter(key for key, _ in expected.elements())
    assert users[str(BOT).encode()] >= 12 and b"steady" not in users

    assert read_all(broker.bootstrap_servers, out["late"]) == []

    dead: Counter = Counter()
    for rec in read_all(broker.bootstrap_servers, out["dlq"]):
        headers = dict(rec.headers or [])
        assert headers["dlq.stage"] == b"decode_click" and headers["dlq.topic"] == topic.encode()
        dead[(rec.key, rec.value, headers["dlq.reason"].decode())] += 1
    assert dead == Counter(BAD_RECORDS)
