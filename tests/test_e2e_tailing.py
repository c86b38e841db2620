"""Tailing mode on the real broker: an idle, caught-up profiles topic must not
hold clicks back, so a live click is joined well under a second after it is
produced even though PROFILE_WAIT_SECONDS is 30."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import ROOT, job_command

pytestmark = pytest.mark.broker


def test_live_click_is_joined_quickly_when_profiles_are_idle(broker, topic_names):
    t = topic_names("clicks", "profiles", "joined", "unmatched", "dlq")
    broker.create_topics({t["clicks"]: 2, t["profiles"]: 2, t["joined"]: 1, t["unmatched"]: 1, t["dlq"]: 1})
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    now_ms = int(time.time() * 1000)
    producer.produce(
        t["profiles"],
        orjson.dumps({"user_id": "live", "updated_at": now_ms - 60_000, "tier": "pro"}),
        b"live",
    )
    producer.flush()

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TAIL": "true",
        "PROFILE_WAIT_SECONDS": "30",
        "CLICKS_TOPIC": t["clicks"],
        "PROFILES_TOPIC": t["profiles"],
        "JOINED_TOPIC": t["joined"],
        "UNMATCHED_TOPIC": t["unmatched"],
        "DLQ_TOPIC": t["dlq"],
    }
    job = subprocess.Popen(
        job_command("clicks"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap_servers, "group.id": "tail-test", "fetch.wait.max.ms": 10}
    )
    consumer.assign([TopicPartition(t["joined"], 0, 0)])
    try:
        time.sleep(3)  # let the job start and catch up with both topics
        assert job.poll() is None, job.stdout.read().decode()[-3000:]
        latencies = []
        for n in range(5):
            produced_at = time.time()
            click_ts = int(produced_at * 1000)
            producer.produce(t["clicks"], orjson.dumps({"user_id": "live", "ts": click_ts, "n": n}), b"live")
            producer.flush()
            record = None
            deadline = time.time() + 20
            while record is None and time.time() < deadline:
                msg = consumer.poll(0.05)
                if msg is not None and msg.error() is None:
                    record = orjson.loads(msg.value())
            assert record is not None, "no joined record within 20 s"
            latencies.append(time.time() - produced_at)
            assert record["click"]["n"] == n
            assert record["profile"]["tier"] == "pro"
        latencies.sort()
        print("click -> joined latencies (s):", [round(x, 3) for x in latencies])
        assert latencies[len(latencies) // 2] < 1.0, latencies
    finally:
        os.killpg(job.pid, signal.SIGTERM)
        try:
            job.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        consumer.close()
