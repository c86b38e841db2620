"""Lag visible to Kafka's own tools: every job commits its input offsets to a
consumer group (``KAFKA_GROUP_ID``, default ``clickstream-<job>``) for
monitoring. A finished run shows zero lag; a tailing run with recovery
commits at every snapshot and catches up to the end. Recovery never reads
these offsets (it resumes from its snapshots), and they never run ahead of
them: a tailing job killed with SIGKILL mid-stream, again and again, has
committed no partition past the offset its recovery store resumes from
(read from the store with :func:`clickstream.recovery_store.resume_snapshots`)."""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from clickstream.read_topic import read_all
from clickstream.recovery_store import resume_snapshots
from conftest import ROOT, job_command
from connectors.kafka_source import stored_offset
from test_crash_recovery import kill, start_job, wait_for
from test_e2e_clicks import canonical, joined_outcomes

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


# --- after kill -9: committed offsets never ahead of what recovery resumes from ----------

KILLS = 3
USERS = 20


def snapshotted_offsets(store: Path, topic: str) -> dict[int, int]:
    """Each partition's next offset as the store's resume state holds it (the
    source snapshots of partitions ``"{i}-{topic}"``)."""
    name = re.compile(rf"(\d+)-{re.escape(topic)}")
    held = {}
    for (_, key), ser in resume_snapshots(store).items():
        match = name.fullmatch(key)
        if match and ser is not None:
            held[int(match.group(1))] = stored_offset(pickle.loads(ser))
    return held


def produce_until(bootstrap: str, topic: str, stop: threading.Event) -> tuple[threading.Thread, list]:
    """Clicks (event time now) at ~250/s until ``stop``; returns the thread and
    the list of the bodies produced (complete once the thread has ended)."""
    bodies: list[dict] = []

    def run() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        while not stop.is_set() and len(bodies) < 20_000:
            for _ in range(25):
                body = {"user_id": f"u{len(bodies) % USERS}", "ts": int(time.time() * 1000), "n": len(bodies)}
                producer.produce(topic, orjson.dumps(body), body["user_id"].encode())
                bodies.append(body)
            producer.flush()
            time.sleep(0.1)  # pacing the producer, not waiting for anything
        assert producer.flush(30) == 0

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, bodies


def assert_not_ahead(bootstrap: str, group: str, store: Path, t: dict, when: str) -> int:
    """Committed offsets <= the offsets the next resume starts from, per
    partition; returns the sum of the committed clicks offsets."""
    clicks = 0
    for role, partitions in (("clicks", 3), ("profiles", 2)):
        got = committed(bootstrap, group, t[role], partitions)
        held = snapshotted_offsets(store, t[role])
        print(f"{when}: {role} committed {got}, snapshotted {held}")
        for p, offset in enumerate(got):
            if offset >= 0:  # -1001: nothing committed yet
                assert p in held and offset <= held[p], f"{when}: {role}[{p}] committed {offset}, held {held}"
        if role == "clicks":
            clicks = sum(got)
    return clicks


@pytest.mark.parametrize("workers", [1, 2])
def test_committed_offsets_never_run_ahead_of_the_snapshot_after_kill_9(
    broker, topic_names, tmp_path, workers
):
    bootstrap = broker.bootstrap_servers
    t = topics(broker, topic_names)
    group = f"monitor-{t['clicks']}"
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    profiles = [{"user_id": f"u{n}", "updated_at": an_hour_ago} for n in range(USERS)]
    profile_counts = produce(bootstrap, t["profiles"], profiles, 2)
    env = env_for(broker, t, KAFKA_TAIL="true", KAFKA_GROUP_ID=group, PROFILE_TTL_SECONDS="86400")
    store, log = tmp_path / "recovery", tmp_path / "job.log"
    stop = threading.Event()
    producing, bodies = produce_until(bootstrap, t["clicks"], stop)
    proc = start_job("clicks", env, store, log, workers)
    try:
        seen = 0
        for n in range(KILLS):
            # Kill as soon as this run's commits move: output is flowing and a
            # snapshot has just been taken, the moment a commit could outrun it.
            def advanced(seen: int = seen) -> bool:
                return sum(committed(bootstrap, group, t["clicks"], 3)) > seen

            wait_for(advanced, 90, "commits to advance", poll_s=0.1)
            kill(proc)
            seen = assert_not_ahead(bootstrap, group, store, t, f"kill {n + 1}")
            proc = start_job("clicks", env, store, log, workers)
        stop.set()
        producing.join(timeout=60)
        ends = [0, 0, 0]
        for rec in read_all(bootstrap, t["clicks"], timeout_s=60):
            ends[rec.partition] = max(ends[rec.partition], rec.offset + 1)
        wait_for(lambda: committed(bootstrap, group, t["clicks"], 3) == ends, 90, f"commits to reach {ends}")
    finally:
        kill(proc, signal.SIGTERM)
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
    assert_not_ahead(bootstrap, group, store, t, "after the stop")
    assert committed(bootstrap, group, t["profiles"], 2) == profile_counts
    profile_of = {p["user_id"]: canonical(p) for p in profiles}
    expected = Counter((b["user_id"], canonical(b), profile_of[b["user_id"]]) for b in bodies)
    assert sum(ends) == len(bodies)
    assert joined_outcomes(broker, t["joined"]) == expected
