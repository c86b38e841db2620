"""An output topic deleted and recreated (same partition count, so the store's
layout record does not change) under a recovery store: the job's sink finds
its snapshot offset beyond the partition's end and the job stops at once,
naming that topic, instead of waiting out the read-back timeout (120 s)."""

from __future__ import annotations

import subprocess
import time

import orjson
import pytest
from confluent_kafka import Producer

from conftest import ROOT, clicks_job_env, job_command

pytestmark = pytest.mark.broker


def produce_clicks(bootstrap: str, topic: str, users: range) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for n in users:
        producer.produce(
            topic, orjson.dumps({"user_id": f"u{n}", "ts": 1_767_225_600_000 + n}), key=b"u%d" % n
        )
    assert producer.flush(30) == 0


def test_a_recreated_output_topic_stops_the_resumed_job_at_once_naming_it(broker, topic_names, tmp_path):
    t = topic_names("clicks", "profiles", "joined", "unmatched", "dlq")
    broker.create_topics({t["clicks"]: 1, t["profiles"]: 1, t["joined"]: 1, t["unmatched"]: 1, t["dlq"]: 1})
    produce_clicks(broker.bootstrap_servers, t["clicks"], range(5))
    env = clicks_job_env(broker, t, RECOVERY_DIR=str(tmp_path / "store"))

    def launch() -> subprocess.CompletedProcess:
        return subprocess.run(
            job_command("clicks"), env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
        )

    first = launch()
    assert first.returncode == 0, first.stderr[-3000:]
    broker.delete_topics([t["joined"]])
    broker.create_topics({t["joined"]: 1})
    produce_clicks(broker.bootstrap_servers, t["clicks"], range(5, 8))  # the resumed job writes again

    started = time.monotonic()
    resumed = launch()
    elapsed = time.monotonic() - started
    assert resumed.returncode != 0, resumed.stderr[-3000:]
    assert (
        f"DeliveryError: cannot resume writing {t['joined']}[0]: the recovery snapshot says offset 4 "
        "was delivered there, but the partition is empty" in resumed.stderr
    ), resumed.stderr[-3000:]
    print(f"resumed job stopped after {elapsed:.1f} s with status {resumed.returncode}")
    assert elapsed < 100  # it used to wait out the 120 s read-back timeout first
