"""End to end on the real broker: ``dataflows.top_users`` in 1 and 2 workers,
against a top-N computed independently from the generated clicks; and the
idle-closing behaviour in tailing mode."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from clickstream.generate import GenerateOptions, generate_records, produce
from clickstream.read_topic import read_all
from conftest import ROOT, job_command

pytestmark = pytest.mark.broker

WINDOW_S = 1800
TOP_N = 5
OPTIONS = GenerateOptions(
    users=40,
    clicks=6000,
    versions_per_user=1,
    seed=11,
    span_seconds=3 * 3600,
    bad_fraction=0.01,
    out_of_order_ms=2000,
)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def expected_windows(options: GenerateOptions) -> dict:
    """window_start ISO -> the expected output value, by brute force."""
    counts = defaultdict(Counter)
    for rec in generate_records(options):
        if rec.topic_role != "clicks" or rec.kind.startswith("bad:"):
            continue
        body = orjson.loads(rec.value)
        ts = body.get("ts")
        if ts is None:
            ms = rec.timestamp_ms
        elif isinstance(ts, int):
            ms = ts
        else:
            ms = int(datetime.fromisoformat(ts).timestamp() * 1000)
        start = ms // (WINDOW_S * 1000) * WINDOW_S * 1000
        counts[start][str(body["user_id"])] += 1
    out = {}
    for start, users in counts.items():
        ranked = sorted(users.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_N]
        out[iso(start)] = {
            "window_start": iso(start),
            "window_end": iso(start + WINDOW_S * 1000),
            "top": [{"user_id": u, "clicks": n} for u, n in ranked],
        }
    return out


def job_env(broker, topics: dict, **extra: str) -> dict:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "CLICKS_TOPIC": topics["clicks"],
        "TOP_USERS_TOPIC": topics["top"],
        "LATE_TOPIC": topics["late"],
        "DLQ_TOPIC": topics["dlq"],
        "WINDOW_SECONDS": str(WINDOW_S),
        "TOP_N": str(TOP_N),
        **extra,
    }


@pytest.fixture(scope="module")
def clicks_topic(broker):
    name = f"e2e_top_clicks_{os.urandom(3).hex()}"
    profiles = f"{name}_profiles"
    broker.create_topics({name: 3, profiles: 1})
    report = produce(OPTIONS, {"bootstrap.servers": broker.bootstrap_servers}, profiles, name)
    assert report.delivery_failures == 0
    return name, report


@pytest.mark.parametrize("workers", [1, 2])
def test_top_users_job_emits_each_window_once_with_the_global_top(broker, clicks_topic, topic_names, workers):
    clicks, report = clicks_topic
    topics = {"clicks": clicks, **topic_names("top", "late", "dlq")}
    broker.create_topics({topics["top"]: 1, topics["late"]: 1, topics["dlq"]: 1})
    proc = subprocess.run(
        job_command("top_users", "-w", str(workers)),
        env=job_env(broker, topics, KAFKA_TAIL="false"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    records = read_all(broker.bootstrap_servers, topics["top"])
    got = {}
    for rec in records:
        value = orjson.loads(rec.value)
        assert rec.key.decode() == value["window_start"]
        assert value["window_start"] not in got, "window emitted twice"
        got[value["window_start"]] = value
    expected = expected_windows(OPTIONS)
    assert len(expected) == 6  # 3 h of data in 30-minute windows
    assert got == expected
    assert read_all(broker.bootstrap_servers, topics["late"]) == []
    assert len(read_all(broker.bootstrap_servers, topics["dlq"])) == sum(
        report.bad_records["clicks"].values()
    )


def test_idle_input_closes_windows_in_tailing_mode(broker, topic_names):
    """Tailing, 2 s windows, no lateness: clicks in the current window, then
    silence. The window is emitted a few seconds after its end although no
    later click ever arrives; a click for it afterwards goes to the late topic."""
    topics = topic_names("clicks", "top", "late", "dlq")
    broker.create_topics({topics["clicks"]: 2, topics["top"]: 1, topics["late"]: 1, topics["dlq"]: 1})
    env = job_env(broker, topics, KAFKA_TAIL="true", WINDOW_SECONDS="2", ALLOWED_LATENESS_SECONDS="0")
    job = subprocess.Popen(
        job_command("top_users"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap_servers, "group.id": "idle", "fetch.wait.max.ms": 10}
    )
    consumer.assign([TopicPartition(topics["top"], 0, 0)])
    try:
        time.sleep(2.5)  # job start-up
        # Produce early in a window: with no allowed lateness, the time a click
        # spends between produce() and the job's fetch must fit in the rest of
        # its window, and on a loaded machine that can take a few hundred ms.
        now_ms = int(time.time() * 1000)
        time.sleep((2000 - now_ms % 2000 + 100) / 1000)
        now_ms = int(time.time() * 1000)
        window_start = now_ms - now_ms % 2000
        for user in ("zoe", "zoe", "yan"):
            producer.produce(topics["clicks"], orjson.dumps({"user_id": user, "ts": now_ms}), user.encode())
        producer.flush()
        window_end_s = (window_start + 2000) / 1000
        value = None
        while value is None and time.time() < window_end_s + 15:
            msg = consumer.poll(0.05)
            if msg is not None and msg.error() is None:
                value = orjson.loads(msg.value())
                emitted_after_end = time.time() - window_end_s
        assert value == {
            "window_start": iso(window_start),
            "window_end": iso(window_start + 2000),
            "top": [{"user_id": "zoe", "clicks": 2}, {"user_id": "yan", "clicks": 1}],
        }
        assert emitted_after_end < 3.0
        # Very late click for the emitted window: late topic, no second emission.
        producer.produce(topics["clicks"], orjson.dumps({"user_id": "xia", "ts": window_start + 1}), b"xia")
        producer.flush()
        time.sleep(1.5)
        assert consumer.poll(0.5) is None
        late = read_all(broker.bootstrap_servers, topics["late"])
        assert [(r.key, orjson.loads(r.value)["user_id"]) for r in late] == [(b"xia", "xia")]
        headers = dict(late[0].headers)
        assert headers["late.window_start"] == iso(window_start).encode()
    finally:
        os.killpg(job.pid, signal.SIGTERM)
        try:
            job.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        consumer.close()
