"""End to end on the real broker: ``JOIN_STRATEGY=interval``. Every click is
paired with each version of its user within [T - 30 s, T + 10 s]; in left mode
a click with none yields one record with ``"profile": null``. Each record's
lineage header is unique per pair. Expected output computed here by brute force.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from clickstream.read_topic import read_all
from conftest import clicks_job_env

pytestmark = pytest.mark.broker

T0 = 1_767_225_600_000
BEFORE_S, AFTER_S = 30, 10


def data(seed: int = 5) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    span = 20 * 60 * 1000
    clicks = [
        {"user_id": f"u{rng.randrange(12)}", "ts": T0 + rng.randrange(span), "n": n} for n in range(600)
    ]
    versions = [
        {"user_id": f"u{rng.randrange(12)}", "updated_at": T0 + rng.randrange(span), "v": n}
        for n in range(240)
    ]
    # each partition in time order: nothing is late
    return sorted(clicks, key=lambda c: c["ts"]), sorted(versions, key=lambda v: v["updated_at"])


def produce(bootstrap: str, topic: str, records: list[dict]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for record in records:
        producer.produce(
            topic, orjson.dumps(record), record["user_id"].encode(), partition=hash(record["user_id"]) % 2
        )
    assert producer.flush(30) == 0


def expected(clicks: list[dict], versions: list[dict], mode: str) -> Counter:
    out: Counter = Counter()
    for c in clicks:
        matches = [
            v
            for v in versions
            if v["user_id"] == c["user_id"]
            and c["ts"] - BEFORE_S * 1000 <= v["updated_at"] <= c["ts"] + AFTER_S * 1000
        ]
        for v in matches:
            out[(c["n"], v["v"])] += 1
        if not matches and mode == "left":
            out[(c["n"], None)] += 1
    return out


@pytest.mark.parametrize("mode", ["left", "inner"])
@pytest.mark.parametrize("workers", [1, 2])
def test_interval_strategy_writes_one_record_per_pair(broker, topic_names, mode, workers):
    topics = topic_names("clicks", "profiles", "joined", "unmatched", "late", "dlq")
    broker.create_topics({t: (2 if k in ("clicks", "profiles", "joined") else 1) for k, t in topics.items()})
    clicks, versions = data()
    produce(broker.bootstrap_servers, topics["profiles"], versions)
    produce(broker.bootstrap_servers, topics["clicks"], clicks)
    env = clicks_job_env(
        broker,
        topics,
        LATE_TOPIC=topics["late"],
        JOIN_MODE=mode,
        JOIN_STRATEGY="interval",
        INTERVAL_BEFORE_SECONDS=str(BEFORE_S),
        INTERVAL_AFTER_SECONDS=str(AFTER_S),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.clicks", "-w", str(workers)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    got: Counter = Counter()
    lineages = []
    for rec in read_all(broker.bootstrap_servers, topics["joined"]):
        body = orjson.loads(rec.value)
        assert rec.key == body["user_id"].encode() and body["source"]["topic"] == topics["clicks"]
        got[(body["click"]["n"], None if body["profile"] is None else body["profile"]["v"])] += 1
        lineages.append(dict(rec.headers)["lineage"])
    want = expected(clicks, versions, mode)
    assert got == want
    assert len(set(lineages)) == len(lineages)
    unmatched = read_all(broker.bootstrap_servers, topics["unmatched"])
    no_match = {c["n"] for c in clicks} - {n for n, _ in expected(clicks, versions, "inner")}
    assert sorted(orjson.loads(r.value)["click"]["n"] for r in unmatched) == (
        sorted(no_match) if mode == "inner" else []
    )
    # the data is not trivial: clicks with several versions, and clicks with none
    per_click = Counter(n for n, v in want if v is not None)
    assert max(per_click.values()) >= 3 and len(no_match) > 100
    assert read_all(broker.bootstrap_servers, topics["late"]) == []
