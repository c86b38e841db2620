"""Operability: a running job serves Prometheus metrics and logs progress."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request

import orjson
import pytest
from confluent_kafka import Producer

from clickstream.broker import free_port
from conftest import ROOT, job_command

pytestmark = pytest.mark.broker


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    values = {}
    for line in text.splitlines():
        match = re.match(r"^(clickstream_\w+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return values


def test_clicks_job_serves_metrics_and_logs_progress_without_secrets(broker, topic_names, tmp_path):
    t = topic_names("clicks", "profiles", "joined", "unmatched", "dlq")
    broker.create_topics({t["clicks"]: 2, t["profiles"]: 1, t["joined"]: 1, t["unmatched"]: 1, t["dlq"]: 1})
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    # Recent event times, so the versions are still live (not expired by the TTL)
    # when the scrape looks at the state size.
    t0 = int(time.time() * 1000) - 3_600_000
    for u in range(10):
        producer.produce(
            t["profiles"], orjson.dumps({"user_id": f"u{u}", "updated_at": t0}), f"u{u}".encode()
        )
    for i in range(300):
        producer.produce(t["clicks"], orjson.dumps({"user_id": f"u{i % 12}", "ts": t0 + 1000 + i}), b"k")
    for bad in (b"{", b"[]", b"{}"):
        producer.produce(t["clicks"], bad, b"k")
    assert producer.flush(30) == 0

    port = free_port()
    log = tmp_path / "job.log"
    job = subprocess.Popen(
        job_command("clicks"),
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "KAFKA_TAIL": "true",
            "KAFKA_SASL_PASSWORD": "s3cret-never-logged",
            "METRICS_PORT": str(port),
            "PROGRESS_INTERVAL_SECONDS": "1",
            "JOIN_MODE": "inner",
            "CLICKS_TOPIC": t["clicks"],
            "PROFILES_TOPIC": t["profiles"],
            "JOINED_TOPIC": t["joined"],
            "UNMATCHED_TOPIC": t["unmatched"],
            "DLQ_TOPIC": t["dlq"],
        },
        stdout=open(log, "wb"),  # noqa: SIM115 - the job writes it for its whole life
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        values = {}
        while time.monotonic() < deadline:
            try:
                values = scrape(port)
            except OSError:
                values = {}
            if (
                values.get("clickstream_joined_total", 0) + values.get("clickstream_unmatched_total", 0)
                >= 300
            ):
                break
            time.sleep(0.5)
        time.sleep(1.5)  # one more progress line
    finally:
        os.killpg(job.pid, signal.SIGTERM)
        job.wait(timeout=20)
    assert values["clickstream_joined_total"] == 250  # users u0..u9 of u0..u11
    assert values["clickstream_unmatched_total"] == 50
    assert values[f'clickstream_records_in_total{{topic="{t["clicks"]}"}}'] == 303
    assert values[f'clickstream_dead_lettered_total{{reason="invalid_json",topic="{t["clicks"]}"}}'] == 1
    assert values[f'clickstream_dead_lettered_total{{reason="not_an_object",topic="{t["clicks"]}"}}'] == 1
    assert values[f'clickstream_dead_lettered_total{{reason="missing_user_id",topic="{t["clicks"]}"}}'] == 1
    assert values['clickstream_state_size{kind="join_users",shard="all"}'] == 10
    text = log.read_text()
    assert re.search(r"clicks progress: in=313 \(\d+/s\) joined=250 unmatched=50 dead_lettered=3", text), (
        text[-2000:]
    )
    assert "s3cret-never-logged" not in text


def _sample(name: str, job: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, {"job": job}) or 0.0


def test_windowed_job_counts_results_and_late_clicks_under_the_job_name(broker, topic_names):
    """The ``job`` label of ``clickstream_results_total`` / ``clickstream_late_total``
    is the job's name (top_users), not its output topic."""
    from bytewax.testing import run_main

    from dataflows import top_users
    from dataflows.settings import TopUsersSettings, load_settings

    t = topic_names("clicks", "top", "late", "dlq")
    broker.create_topics({t["clicks"]: 1, t["top"]: 1, t["late"]: 1, t["dlq"]: 1})
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    t0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a window start
    # One record per poll: the second click closes window 0 before the third arrives.
    for ts in (t0, t0 + 7_200_000, t0 + 1):
        producer.produce(t["clicks"], orjson.dumps({"user_id": "u1", "ts": ts}), b"u1")
    assert producer.flush(30) == 0
    settings, kafka = load_settings(
        TopUsersSettings,
        {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "KAFKA_TAIL": "false",
            "SOURCE_BATCH_SIZE": "1",
            "ALLOWED_LATENESS_SECONDS": "0",
            "STATE_SHARDS": "1",
            "CLICKS_TOPIC": t["clicks"],
            "TOP_USERS_TOPIC": t["top"],
            "LATE_TOPIC": t["late"],
            "DLQ_TOPIC": t["dlq"],
        },
    )
    before = {
        name: _sample(name, "top_users") for name in ("clickstream_results_total", "clickstream_late_total")
    }
    run_main(top_users.build_flow(settings, kafka))
    assert _sample("clickstream_results_total", "top_users") - before["clickstream_results_total"] == 2
    assert _sample("clickstream_late_total", "top_users") - before["clickstream_late_total"] == 1
    assert _sample("clickstream_results_total", t["top"]) == 0.0
