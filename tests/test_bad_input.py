"""Bad input at scale: whatever the bytes, a record is either valid or dead-lettered
with a known reason; the flow never crashes, and valid records around bad ones
are processed."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer
from hypothesis import given, settings
from hypothesis import strategies as st

from clickstream.read_topic import read_all
from conftest import ROOT, job_command
from operators.decode import decode_batch
from operators.event_parsing import DECODE_REASONS
from operators.record_mapping import parse_click, parse_profile
from operators.records import Click, DeadLetter, PartitionStatus, ProfileVersion, SourceBatch, SourceRecord
from story import T0

NOW = T0 + 86_400_000

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
user_ids = st.one_of(
    st.text(max_size=10), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(), json_values
)
times = st.one_of(
    st.integers(min_value=-(2**62), max_value=2**62),
    st.text(max_size=30),
    st.datetimes().map(lambda d: d.isoformat()),
    st.floats(allow_nan=False),
    st.none(),
)
objects = st.fixed_dictionaries(
    {}, optional={"user_id": user_ids, "ts": times, "updated_at": times, "x": json_values}
)


def record(value, timestamp_ms=T0) -> SourceRecord:
    return SourceRecord(0, 0, b"k", value, timestamp_ms, None)


def check(result, value) -> None:
    if type(result) is DeadLetter:
        assert result.reason in DECODE_REASONS
        assert result.record.value == value
    else:
        assert type(result) in (Click, ProfileVersion)
        assert isinstance(result.key, str) and result.key
        assert 0 <= result.ts_ms <= NOW + 24 * 3600 * 1000
        assert result.value == value


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_valid_or_dead_lettered_never_raise(value):
    for parse in (parse_click, parse_profile):
        check(parse(record(value), "t", NOW), value)


@settings(max_examples=400, deadline=None)
@given(objects, st.one_of(st.none(), st.integers(min_value=0, max_value=NOW)))
def test_any_json_object_is_valid_or_dead_lettered_never_raise(obj, message_ts):
    value = json.dumps(obj).encode()  # stdlib: also writes integers beyond 64 bits
    for parse in (parse_click, parse_profile):
        check(parse(record(value, message_ts), "t", NOW), value)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(st.binary(max_size=60), objects.map(lambda o: json.dumps(o).encode()), st.none()),
        max_size=30,
    )
)
def test_decoding_a_batch_accounts_for_every_record(values):
    records = [SourceRecord(0, i, None, v, T0, None) for i, v in enumerate(values)]
    batch = SourceBatch("t", 0, 1, records, PartitionStatus.READING, NOW)
    oks, dead = decode_batch(batch, parse_click, max_record_bytes=50, stage="decode_click")
    assert sorted([c.offset for c in oks.items] + [d.record.offset for d in dead]) == list(range(len(values)))
    assert all(d.reason == "too_large" for d in dead if d.record.value and len(d.record.value) > 50)


# ---------------------------------------------------------------- on the broker


def malformed_records(n: int, rng: random.Random):
    """n bad click records of every kind, with the reason each must get."""
    huge = orjson.dumps({"user_id": "big", "ts": T0, "blob": "x" * 1_100_000})
    makers = [
        (lambda i: (b"k%d" % i, b"{not json %d" % i), "invalid_json"),
        (lambda i: (None, b'{"user_id": "\xff\xfe%d"}' % i), "invalid_json"),
        (lambda i: (b"k", orjson.dumps([i, "list"])), "not_an_object"),
        (lambda i: (b"k", orjson.dumps(i)), "not_an_object"),
        (lambda i: (None, orjson.dumps({"ts": T0 + i})), "missing_user_id"),
        (lambda i: (b"k", orjson.dumps({"user_id": i + 0.5, "ts": T0})), "invalid_user_id"),
        (lambda i: (b"k", orjson.dumps({"user_id": [i], "ts": T0})), "invalid_user_id"),
        (lambda i: (b"k", orjson.dumps({"user_id": False, "ts": T0})), "invalid_user_id"),
        (lambda i: (b"k", orjson.dumps({"user_id": f"u{i}", "ts": "noon"})), "invalid_time"),
        (lambda i: (b"k", orjson.dumps({"user_id": f"u{i}", "ts": 4_000_000_000_000 + i})), "invalid_time"),
        (lambda i: (b"k", orjson.dumps({"user_id": f"u{i}", "ts": -1 - i})), "invalid_time"),
        (
            lambda i: (b"k", orjson.dumps({"user_id": f"u{i}", "ts": "1960-01-01T00:00:00+00:00"})),
            "invalid_time",
        ),
        (lambda i: (b"k%d" % i, None), "empty_value"),
    ]
    out = []
    for i in range(n):
        make, reason = makers[i % len(makers)]
        key, value = make(i)
        out.append((key, value, reason))
    for i in range(3):
        out.append((b"huge%d" % i, huge, "too_large"))
    rng.shuffle(out)
    return out


@pytest.mark.broker
def test_ten_thousand_malformed_records_all_reach_the_dlq(broker, topic_names):
    rng = random.Random(5)
    t = topic_names("clicks", "profiles", "joined", "dlq")
    broker.create_topics({t["clicks"]: 3, t["profiles"]: 1, t["joined"]: 2, t["dlq"]: 1})
    bad = malformed_records(10_000, rng)
    good = [
        (f"u{i % 50}".encode(), orjson.dumps({"user_id": f"u{i % 50}", "ts": T0 + i, "n": i}))
        for i in range(2000)
    ]
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5, "message.max.bytes": 4_000_000}
    )
    mixed = [(k, v) for k, v, _ in bad] + good
    rng.shuffle(mixed)
    for key, value in mixed:
        producer.produce(t["clicks"], value, key)
        producer.poll(0)
    assert producer.flush(60) == 0

    proc = subprocess.run(
        job_command("clicks", "-w", "2"),
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "KAFKA_TAIL": "false",
            "CLICKS_TOPIC": t["clicks"],
            "PROFILES_TOPIC": t["profiles"],
            "JOINED_TOPIC": t["joined"],
            "DLQ_TOPIC": t["dlq"],
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    dead = read_all(broker.bootstrap_servers, t["dlq"], timeout_s=60)
    got = Counter((r.key, r.value, dict(r.headers)["dlq.reason"].decode()) for r in dead)
    assert got == Counter(bad)
    assert all(dict(r.headers)["dlq.error"] for r in dead)
    joined = read_all(broker.bootstrap_servers, t["joined"], timeout_s=60)
    assert sorted(orjson.loads(r.value)["click"]["n"] for r in joined) == list(range(2000))


@pytest.mark.broker
def test_a_record_the_broker_rejects_stops_the_job_loudly(broker, topic_names):
    """An output larger than the producer's limit is not dropped silently: the
    job stops with a clear error (with recovery, a restart replays it)."""
    t = topic_names("clicks", "profiles", "joined", "dlq")
    broker.create_topics({t["clicks"]: 1, t["profiles"]: 1, t["joined"]: 1, t["dlq"]: 1})
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    producer.produce(t["clicks"], orjson.dumps({"user_id": "u", "ts": T0, "blob": "x" * 5000}), b"u")
    assert producer.flush(30) == 0
    proc = subprocess.run(
        job_command("clicks"),
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "KAFKA_TAIL": "false",
            "KAFKA_MESSAGE_MAX_BYTES": "4000",
            "CLICKS_TOPIC": t["clicks"],
            "PROFILES_TOPIC": t["profiles"],
            "JOINED_TOPIC": t["joined"],
            "DLQ_TOPIC": t["dlq"],
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "DeliveryError" in proc.stderr and t["joined"] in proc.stderr
    assert "Message size too large" in proc.stderr or "MSG_SIZE_TOO_LARGE" in proc.stderr
