"""A job never creates a topic: a missing input or output topic stops it at
start-up with one message naming the topic, and the topic still does not exist."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT
from connectors.kafka_io import partition_counts

pytestmark = pytest.mark.broker


def run(broker, job: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bytewax.run", f"dataflows.{job}"],
        env={
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "KAFKA_TAIL": "false",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("missing", ["clicks", "profiles", "joined", "dlq"])
def test_the_clicks_job_refuses_a_missing_topic_and_creates_none(broker, topic_names, missing):
    t = topic_names("clicks", "profiles", "joined", "unmatched", "dlq")
    broker.create_topics({name: 1 for kind, name in t.items() if kind != missing})
    proc = run(
        broker,
        "clicks",
        {
            "CLICKS_TOPIC": t["clicks"],
            "PROFILES_TOPIC": t["profiles"],
            "JOINED_TOPIC": t["joined"],
            "UNMATCHED_TOPIC": t["unmatched"],
            "DLQ_TOPIC": t["dlq"],
        },
    )
    assert proc.returncode != 0
    assert (
        f"topic {t[missing]!r} is not usable at {broker.bootstrap_servers}: it does not exist (create it first)"
        in proc.stderr
    )
    assert partition_counts(broker.bootstrap_servers, [t[missing]]) == {t[missing]: None}


def test_a_windowed_job_refuses_a_missing_late_topic(broker, topic_names):
    t = topic_names("clicks", "top", "late", "dlq")
    broker.create_topics({t["clicks"]: 1, t["top"]: 1, t["dlq"]: 1})
    proc = run(
        broker,
        "top_users",
        {
            "CLICKS_TOPIC": t["clicks"],
            "TOP_USERS_TOPIC": t["top"],
            "LATE_TOPIC": t["late"],
            "DLQ_TOPIC": t["dlq"],
        },
    )
    assert proc.returncode != 0
    assert f"topic {t['late']!r} is not usable" in proc.stderr
    assert partition_counts(broker.bootstrap_servers, [t["late"]]) == {t["late"]: None}
