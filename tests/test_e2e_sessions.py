"""End to end on the real broker: deterministic clicks -> ``python -m bytewax.run
dataflows.sessions`` (KAFKA_TAIL=false) -> SESSIONS_TOPIC, LATE_TOPIC and
DLQ_TOPIC read back -> the exact expected output.

The expected sessions are computed here, independently of the operator: each
user's clicks sorted by event time and split where consecutive clicks are more
than the gap apart. The clicks are produced with a bounded disorder (less than
the allowed lateness within every partition), so none of them may be late.

The late-click run uses one partition read one record per poll, so the shard
that owns a user has always seen the user's previous click: a click older than
that one by more than gap + lateness is late whatever the timing.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple

import orjson
import pytest
from confluent_kafka import Producer

from clickstream.read_topic import read_all
from conftest import ROOT, job_command

pytestmark = pytest.mark.broker

GAP_S = 600
LATENESS_S = 30
#: 2026-01-01T00:00:00Z in epoch ms.
T0 = 1_767_225_600_000


class Rec(NamedTuple):
    """A record to produce: partition, key, value (None for a tombstone)."""

    partition: int
    key: bytes | None
    value: bytes | None


def to_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def user_clicks(rng: random.Random, user: str, gap_ms: int) -> list[int]:
    """One user's click times: a few sessions, steps up to (and exactly) the gap
    inside one, more than (and just over) the gap between them."""
    times, t = [], T0 + rng.randrange(0, 3_600_000)
    for _ in range(rng.randint(1, 4)):
        for _ in range(rng.randint(1, 6)):
            times.append(t)
            t += rng.choice([0, 1_000, 45_000, gap_ms // 2, gap_ms])
        t += rng.choice([gap_ms + 1, gap_ms + 1_000, 3 * gap_ms, 5 * 3_600_000])
    return times


def click_value(rng: random.Random, user: str, ts: int, n: int) -> bytes:
    """A click in one of the accepted shapes: int or string user id, epoch ms or ISO
    time (in UTC or at +02:00)."""
    uid = int(user) if user.isdigit() else user
    zone = rng.choice([UTC, timezone(timedelta(hours=2))])
    when = ts if rng.random() < 0.6 else datetime.fromtimestamp(ts / 1000, tz=zone).isoformat()
    return orjson.dumps({"user_id": uid, "ts": when, "page": f"/p/{n}"})


def split_sessions(times: list[int], gap_ms: int) -> list[tuple[int, int, int]]:
    """(start, end, clicks) of sorted click times split on gaps > gap_ms."""
    out: list[tuple[int, int, int]] = []
    for t in sorted(times):
        if out and t - out[-1][1] <= gap_ms:
            out[-1] = (out[-1][0], t, out[-1][2] + 1)
        else:
            out.append((t, t, 1))
    return out


BAD = [
    (b"bad-json", b"{not json", "invalid_json"),
    (b"no-user", orjson.dumps({"ts": T0, "page": "/"}), "missing_user_id"),
    (b"bad-time", orjson.dumps({"user_id": "u1", "ts": "yesterday"}), "invalid_time"),
    (b"tombstone", None, "empty_value"),
]


class Dataset(NamedTuple):
    records: list[Rec]
    #: Counter of (key, user, start ms, end ms, clicks).
    sessions: Counter
    #: Counter of (key, value, window start ms, window end ms, event ms).
    late: Counter
    #: Counter of (key, value, reason).
    dead: Counter


def make_dataset(seed: int, partitions: int, users: int, late_clicks: int) -> Dataset:
    """Clicks of ``users`` users over ``partitions`` partitions, jittered by less than
    the lateness, bad records sprinkled in; ``late_clicks`` very late clicks, each
    right after a click of the same user (single partition only)."""
    rng = random.Random(seed)
    gap_ms = GAP_S * 1000
    names = [f"user-{i:02d}" if i % 3 else str(1000 + i) for i in range(users)]
    clicks: list[tuple[float, str, int, bytes]] = []
    for user in names:
        for n, ts in enumerate(user_clicks(rng, user, gap_ms)):
            # arrival order: event time plus up to 20 s of jitter (< lateness)
            clicks.append((ts + rng.uniform(0, 20_000), user, ts, click_value(rng, user, ts, n)))
    clicks.sort()
    records: list[Rec] = []
    late: Counter = Counter()
    late_users = set(rng.sample(names, late_clicks))
    by_user: dict[str, list[int]] = {}
    for _, user, ts, value in clicks:
        records.append(Rec(rng.randrange(partitions), user.encode(), value))
        by_user.setdefault(user, []).append(ts)
        if user in late_users:
            late_users.discard(user)
            # Two gaps before any of the user's clicks: it would start a session
            # of its own, closed long ago (the watermark is past ts - 1).
            old = min(by_user[user]) - 2 * gap_ms - 1_000
            value = orjson.dumps({"user_id": user, "ts": old, "page": "/very-late"})
            records.append(Rec(records[-1].partition, user.encode(), value))
            late[(user.encode(), value, old, old + gap_ms, old)] += 1
    dead: Counter = Counter()
    for key, value, reason in BAD:
        records.insert(rng.randrange(len(records)), Rec(rng.randrange(partitions), key, value))
        dead[(key, value, reason)] += 1
    sessions: Counter = Counter()
    for user, times in by_user.items():
        for start, end, n in split_sessions(times, gap_ms):
            sessions[(user.encode(), user, start, end, n)] += 1
    return Dataset(records, sessions, late, dead)


def produce(bootstrap: str, topic: str, records: list[Rec]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for rec in records:
        producer.produce(topic, rec.value, rec.key, partition=rec.partition)
    assert producer.flush(30) == 0


def run_sessions_job(broker, env_overrides: dict, workers: int) -> float:
    """Run the job to the end of its input; return how long it took (s)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TAIL": "false",
        "SESSION_GAP_SECONDS": str(GAP_S),
        "ALLOWED_LATENESS_SECONDS": str(LATENESS_S),
        "STATE_SHARDS": "8",
        **env_overrides,
    }
    started = time.monotonic()
    proc = subprocess.run(
        job_command("sessions", "-w", str(workers)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return time.monotonic() - started


def read_sessions(broker, topic: str) -> Counter:
    out: Counter = Counter()
    for rec in read_all(broker.bootstrap_servers, topic):
        body = orjson.loads(rec.value)
        assert sorted(body) == ["clicks", "end", "start", "user_id"]
        assert body["start"].endswith("+00:00") and body["end"].endswith("+00:00")
        out[(rec.key, body["user_id"], to_ms(body["start"]), to_ms(body["end"]), body["clicks"])] += 1
    return out


def read_late(broker, topic: str, clicks_topic: str) -> Counter:
    out: Counter = Counter()
    for rec in read_all(broker.bootstrap_servers, topic):
        headers = dict(rec.headers or [])
        assert headers["late.topic"] == clicks_topic.encode()
        assert int(headers["late.offset"]) >= 0 and headers["late.partition"] == b"0"
        window = (to_ms(headers["late.window_start"].decode()), to_ms(headers["late.window_end"].decode()))
        out[(rec.key, rec.value, *window, to_ms(headers["late.event_time"].decode()))] += 1
    return out


def read_dead(broker, topic: str) -> Counter:
    out: Counter = Counter()
    for rec in read_all(broker.bootstrap_servers, topic):
        headers = dict(rec.headers or [])
        assert headers["dlq.stage"] == b"decode_click"
        out[(rec.key, rec.value, headers["dlq.reason"].decode())] += 1
    return out


def run_on_fresh_topics(broker, topic_names, data: Dataset, partitions: int, workers: int, **env) -> dict:
    t = topic_names("clicks", "sessions", "late", "dlq")
    broker.create_topics({t["clicks"]: partitions, t["sessions"]: 2, t["late"]: 1, t["dlq"]: 1})
    produce(broker.bootstrap_servers, t["clicks"], data.records)
    took = run_sessions_job(
        broker,
        {
            "CLICKS_TOPIC": t["clicks"],
            "SESSIONS_TOPIC": t["sessions"],
            "LATE_TOPIC": t["late"],
            "DLQ_TOPIC": t["dlq"],
            **env,
        },
        workers,
    )
    print(f"sessions job, {workers} worker(s): {took:.1f} s")
    return t


@pytest.mark.parametrize("workers", [1, 2])
def test_sessions_job_writes_exactly_the_expected_sessions(broker, topic_names, workers):
    """Three partitions, a user's clicks spread over all of them, nothing late."""
    data = make_dataset(seed=11, partitions=3, users=40, late_clicks=0)
    t = run_on_fresh_topics(broker, topic_names, data, partitions=3, workers=workers)

    assert read_sessions(broker, t["sessions"]) == data.sessions
    assert read_late(broker, t["late"], t["clicks"]) == Counter()
    assert read_dead(broker, t["dlq"]) == data.dead
    # the data is not trivial: many sessions, some users with several
    assert sum(data.sessions.values()) > 80
    assert sum(n for (*_, n) in data.sessions) == sum(1 for r in data.records if r.value) - 3


@pytest.mark.parametrize("workers", [1, 2])
def test_very_late_clicks_go_to_the_late_topic_and_open_no_session(broker, topic_names, workers):
    """One partition, one record per poll: each very late click follows its
    user's previous click, so its shard's watermark is already far past it."""
    data = make_dataset(seed=5, partitions=1, users=12, late_clicks=4)
    t = run_on_fresh_topics(broker, topic_names, data, partitions=1, workers=workers, SOURCE_BATCH_SIZE="1")

    assert read_sessions(broker, t["sessions"]) == data.sessions
    assert read_late(broker, t["late"], t["clicks"]) == data.late
    assert read_dead(broker, t["dlq"]) == data.dead
    assert sum(data.late.values()) == 4
