"""End to end on the real broker with topics not shaped like the demo's.

Clicks ``{"user": {"id": 42}, "event_time": 1767225600.25, ...}`` (a nested
key, epoch *seconds* as floats); profiles keyed by the Kafka message key,
whose value has no id at all and an ISO-8601 ``modified`` time. The clicks
job writes the flat shape with a prefix and a field selection; top_users
counts the same clicks by the mapped key. Expected outputs are computed here
from the produced data: an as-of lookup per user, and a brute-force top-N.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime

import orjson
import pytest
from confluent_kafka import Producer

from clickstream.read_topic import read_all
from conftest import ROOT

pytestmark = pytest.mark.broker

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TTL_S = 900
WINDOW_S = 1800
TOP_N = 3
MAPPING = {
    "CLICKS_KEY": "user.id",
    "CLICKS_TIME": "event_time",
    "CLICKS_TIME_FORMAT": "epoch_s",
}
JOIN_SETTINGS = {
    **MAPPING,
    "PROFILES_KEY": "@key",
    "PROFILES_TIME": "modified",
    "PROFILES_TIME_FORMAT": "iso8601",
    "OUTPUT_SHAPE": "flat",
    "FLAT_PROFILE_PREFIX": "p_",
    "PROFILE_FIELDS": "tier,city",
    "PROFILE_TTL_SECONDS": str(TTL_S),
}
UNIT_MISTAKE = "looks like epoch milliseconds: set CLICKS_TIME_FORMAT=epoch_ms"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


class Data:
    """Seeded clicks and profile versions, with the bad records each job must refuse."""

    def __init__(self, seed: int = 3, users: int = 25, clicks: int = 900, versions: int = 80):
        rng = random.Random(seed)
        span_ms = 2 * 3600 * 1000
        self.profiles: list[tuple[bytes, bytes, int]] = []  # (key, value, event ms)
        times = rng.sample(range(0, span_ms, 1000), versions)
        for n, at in enumerate(times):
            user = f"{rng.randrange(users)}"
            body = {
                "modified": iso(T0 + at).replace("+00:00", "Z"),
                "tier": rng.choice("ABC"),
                "secret": f"s{n}",
            }
            if rng.random() < 0.5:
                body["city"] = rng.choice(["Oslo", "Lima"])
            self.profiles.append((user.encode(), orjson.dumps(body), T0 + at))
        self.clicks: list[tuple[bytes, int, str]] = []  # (value, event ms, user)
        for n in range(clicks):
            at = T0 + rng.randrange(span_ms)
            user = rng.randrange(users + 3)  # a few users have no profile
            uid = user if rng.random() < 0.5 else str(user)
            body = {"user": {"id": uid}, "event_time": at / 1000, "page": f"/p{n}", "n": n}
            self.clicks.append((orjson.dumps(body), at, str(user)))
        self.bad_clicks = [
            # epoch milliseconds where seconds are declared: refused, never 58000 years ahead
            (orjson.dumps({"user": {"id": 1}, "event_time": T0}), "invalid_time"),
            (orjson.dumps({"user": "1", "event_time": T0 / 1000}), "missing_user_id"),
            (orjson.dumps({"user": {"id": None}, "event_time": T0 / 1000}), "invalid_user_id"),
        ]
        self.bad_profiles = [(None, orjson.dumps({"modified": "2026-01-01T00:00:00Z"}), "missing_user_id")]


def produce(
    bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]], partitions: int
) -> list[tuple[int, int]]:
    """Produce in order (round-robin partitions); return each message's (partition, offset)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    where: dict[int, tuple[int, int]] = {}
    errors = []

    def report(index):
        def on_delivery(err, msg):
            if err is not None:
                errors.append(err)
            else:
                where[index] = (msg.partition(), msg.offset())

        return on_delivery

    for i, (key, value) in enumerate(messages):
        producer.produce(topic, value, key, partition=i % partitions, on_delivery=report(i))
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors
    return [where[i] for i in range(len(messages))]


@pytest.fixture(scope="module")
def inputs(broker):
    suffix = os.urandom(3).hex()
    topics = {"clicks": f"own_clicks_{suffix}", "profiles": f"own_profiles_{suffix}"}
    broker.create_topics({topics["clicks"]: 3, topics["profiles"]: 2})
    data = Data()
    produce(
        broker.bootstrap_servers,
        topics["profiles"],
        [(k, v) for k, v, _ in data.profiles] + [(k, v) for k, v, _ in data.bad_profiles],
        2,
    )
    coords = produce(
        broker.bootstrap_servers,
        topics["clicks"],
        [(None, v) for v, _, _ in data.clicks] + [(None, v) for v, _ in data.bad_clicks],
        3,
    )
    return topics, data, coords


def expected_flat(data: Data, coords: list[tuple[int, int]], topic: str) -> Counter:
    history = defaultdict(list)
    for key, value, at in data.profiles:
        body = orjson.loads(value)
        history[key.decode()].append((at, {f"p_{f}": body[f] for f in ("tier", "city") if f in body}))
    out: Counter = Counter()
    for (value, at, user), (partition, offset) in zip(data.clicks, coords, strict=False):
        fields = None
        older = [v for v in history.get(user, []) if v[0] <= at]
        if older:
            version_at, fields = max(older, key=lambda v: v[0])
            if at - version_at > TTL_S * 1000:
                fields = None
        record = dict(orjson.loads(value))
        record.update(fields or {})
        record["_join"] = {
            "click_ts": at,
            "profile_ts": version_at if fields is not None else None,
            "source": {"topic": topic, "partition": partition, "offset": offset},
        }
        out[(user, orjson.dumps(record, option=orjson.OPT_SORT_KEYS))] += 1
    return out


def run_job(broker, job: str, env: dict, workers: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", f"dataflows.{job}", "-w", str(workers)],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "KAFKA_TAIL": "false",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def dead_letters(broker, topic: str) -> Counter:
    out: Counter = Counter()
    for rec in read_all(broker.bootstrap_servers, topic):
        headers = dict(rec.headers)
        out[(rec.value, headers["dlq.reason"].decode(), headers["dlq.stage"].decode())] += 1
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_clicks_job_joins_our_own_schema_into_flat_records(broker, inputs, topic_names, workers):
    topics, data, coords = inputs
    out = topic_names("joined", "dlq")
    broker.create_topics({out["joined"]: 2, out["dlq"]: 1})
    run_job(
        broker,
        "clicks",
        {
            **JOIN_SETTINGS,
            "CLICKS_TOPIC": topics["clicks"],
            "PROFILES_TOPIC": topics["profiles"],
            "JOINED_TOPIC": out["joined"],
            "DLQ_TOPIC": out["dlq"],
        },
        workers,
    )

    got: Counter = Counter()
    for rec in read_all(broker.bootstrap_servers, out["joined"]):
        got[(rec.key.decode(), orjson.dumps(orjson.loads(rec.value), option=orjson.OPT_SORT_KEYS))] += 1
    expected = expected_flat(data, coords, topics["clicks"])
    assert got == expected
    matched = sum(n for (_, v), n in expected.items() if b'"p_tier"' in v)
    assert matched > 200 and sum(expected.values()) - matched > 200  # both outcomes happen
    assert dead_letters(broker, out["dlq"]) == Counter(
        {(v, reason, "decode_click"): 1 for v, reason in data.bad_clicks}
        | {(v, reason, "decode_profile"): 1 for _, v, reason in data.bad_profiles}
    )
    unit = [
        r
        for r in read_all(broker.bootstrap_servers, out["dlq"])
        if dict(r.headers)["dlq.reason"] == b"invalid_time"
    ]
    assert len(unit) == 1 and dict(unit[0].headers)["dlq.error"].decode().endswith(UNIT_MISTAKE)


def expected_top(data: Data) -> dict:
    counts = defaultdict(Counter)
    for _, at, user in data.clicks:
        counts[at // (WINDOW_S * 1000) * WINDOW_S * 1000][user] += 1
    out = {}
    for start, users in counts.items():
        ranked = sorted(users.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_N]
        out[iso(start)] = {
            "window_start": iso(start),
            "window_end": iso(start + WINDOW_S * 1000),
            "top": [{"user_id": u, "clicks": n} for u, n in ranked],
        }
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_top_users_counts_by_the_mapped_key_in_epoch_seconds(broker, inputs, topic_names, workers):
    topics, data, _ = inputs
    out = topic_names("top", "late", "dlq")
    broker.create_topics({out["top"]: 1, out["late"]: 1, out["dlq"]: 1})
    run_job(
        broker,
        "top_users",
        {
            **MAPPING,
            "CLICKS_TOPIC": topics["clicks"],
            "TOP_USERS_TOPIC": out["top"],
            "LATE_TOPIC": out["late"],
            "DLQ_TOPIC": out["dlq"],
            "WINDOW_SECONDS": str(WINDOW_S),
            "TOP_N": str(TOP_N),
        },
        workers,
    )
    got = {}
    for rec in read_all(broker.bootstrap_servers, out["top"]):
        value = orjson.loads(rec.value)
        assert value["window_start"] not in got, "window emitted twice"
        got[value["window_start"]] = value
    expected = expected_top(data)
    assert len(expected) == 4  # 2 h in 30-minute windows, labelled 2026, not 1970
    assert got == expected
    assert read_all(broker.bootstrap_servers, out["late"]) == []
    assert dead_letters(broker, out["dlq"]) == Counter(
        {(v, reason, "decode_click"): 1 for v, reason in data.bad_clicks}
    )
