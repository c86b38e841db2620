"""Lag visible to Kafka's own tools: every job commits its input offsets to a
consumer group (``KAFKA_GROUP_ID``, default ``clickstream-<job>``) for
monitoring. A finished run shows zero lag; a tailing run with recovery
commits at every snapshot and catches up to the end. Recovery never reads
these offsets (it resumes from its snapshots)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import ROOT, job_command

pytestmark = pytest.mark.broker


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in got]
    finally:
        consumer.close()


def produce(bootstrap: str, topic: str, records: list[dict], partitions: int) -> list[int]:
    """Produce round-robin; return how many records each partition got."""
    producer = Producer({"bootstrap.servers": bootstrap})
    counts = [0] * partitions
    for n, record in enumerate(records):
        producer.produce(topic, orjson.dumps(record), partition=n % partitions)
        counts[n % partitions] += 1
    assert producer.flush(30) == 0
    return counts


def env_for(broker, t: dict, **extra: str) -> dict:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "CLICKS_TOPIC": t["clicks"],
        "PROFILES_TOPIC": t["profiles"],
        "JOINED_TOPIC": t["joined"],
        "DLQ_TOPIC": t["dlq"],
        **extra,
    }


def topics(broker, topic_names) -> dict:
    t = topic_names("clicks", "profiles", "joined", "dlq")
    broker.create_topics({t["clicks"]: 3, t["profiles"]: 2, t["joined"]: 1, t["dlq"]: 1})
    return t


def test_a_finished_run_commits_the_end_of_every_input_partition(broker, topic_names):
    t = topics(broker, topic_names)
    now = int(time.time() * 1000)
    clicks = produce(
        broker.bootstrap_servers, t["clicks"], [{"user_id": f"u{n % 7}", "ts": now} for n in range(100)], 3
    )
    profiles = produce(
        broker.bootstrap_servers,
        t["profiles"],
        [{"user_id": f"u{n}", "updated_at": now} for n in range(7)],
        2,
    )
    group = f"monitor-{t['clicks']}"
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.clicks"],
        env=env_for(broker, t, KAFKA_TAIL="false", KAFKA_GROUP_ID=group),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert committed(broker.bootstrap_servers, group, t["clicks"], 3) == clicks == [34, 33, 33]
    assert committed(broker.bootstrap_servers, group, t["profiles"], 2) == profiles == [4, 3]


def test_a_tailing_run_commits_at_snapshots_under_the_default_group(broker, topic_names, tmp_path):
    t = topics(broker, topic_names)
    group = "clickstream-clicks"  # the default: one job per test broker uses it
    now = int(time.time() * 1000)
    produce(broker.bootstrap_servers, t["profiles"], [{"user_id": "u1", "updated_at": now}], 2)
    env = env_for(broker, t, RECOVERY_DIR=str(tmp_path / "recovery"), RECOVERY_SNAPSHOT_SECONDS="1")
    job = subprocess.Popen(
        job_command("clicks"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT
    )
    try:
        clicks = produce(
            broker.bootstrap_servers,
            t["clicks"],
            [{"user_id": "u1", "ts": now, "n": n} for n in range(60)],
            3,
        )
        deadline = time.monotonic() + 60
        while committed(broker.bootstrap_servers, group, t["clicks"], 3) != clicks:
            assert time.monotonic() < deadline, committed(broker.bootstrap_servers, group, t["clicks"], 3)
            time.sleep(0.5)
        # the profile read; the empty partition has nothing to commit (-1001: none)
        assert committed(broker.bootstrap_servers, group, t["profiles"], 2) == [1, -1001]
    finally:
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=25) == 0
