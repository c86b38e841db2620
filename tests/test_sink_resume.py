"""A resumed job whose sink snapshots no longer fit its output topics stops at
once naming the right topic, instead of applying an offset to another
partition or waiting out the read-back timeout (120 s) on every restart.

* an output topic deleted and recreated (same partition count, so the
  store's layout record does not change): the offset is beyond its end;
* ``JOIN_MODE`` left -> inner on a store without a layout record
  (``bytewax.run`` started directly): the dead letters' snapshot would land
  on an unmatched partition (sink partitions are numbered over all topics).
"""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest
from confluent_kafka import Producer

from conftest import ROOT, clicks_job_env, job_command

pytestmark = pytest.mark.broker


def produce_clicks(bootstrap: str, topic: str, users: range, bad: int = 0) -> None:
    """Clicks of users ``u<n>``, then ``bad`` records that are not JSON (dead letters)."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for n in users:
        producer.produce(
            topic, orjson.dumps({"user_id": f"u{n}", "ts": 1_767_225_600_000 + n}), key=b"u%d" % n
        )
    for n in range(bad):
        producer.produce(topic, b"not json %d" % n)
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


def test_join_mode_changed_under_a_store_without_layout_stops_naming_both_partitions(
    broker, topic_names, tmp_path
):
    t = topic_names("clicks", "profiles", "joined", "unmatched", "dlq")
    broker.create_topics({t["clicks"]: 1, t["profiles"]: 1, t["joined"]: 2, t["unmatched"]: 3, t["dlq"]: 1})
    produce_clicks(broker.bootstrap_servers, t["clicks"], range(6), bad=3)
    store = tmp_path / "store"
    store.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(store), "1"], check=True, timeout=60)

    def run(mode: str) -> subprocess.CompletedProcess:
        command = [
            sys.executable,
            "-m",
            "bytewax.run",
            "dataflows.clicks",
            "-r",
            str(store),
            "-s",
            "1",
            "-b",
            "0",
        ]
        env = clicks_job_env(broker, t, JOIN_MODE=mode)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)

    left = run("left")  # sink partitions: joined[0], joined[1], dlq[0]
    assert left.returncode == 0, left.stderr[-3000:]
    assert f"{t['dlq']}[0]: wrote 3" in left.stderr
    produce_clicks(broker.bootstrap_servers, t["clicks"], range(6, 9))
    inner = run("inner")  # joined[0], joined[1], unmatched[0..2], dlq[0]
    assert inner.returncode != 0
    assert (
        f"SinkStateMismatch: the sink partition for {t['unmatched']}[0] was given the snapshot "
        f"of {t['dlq']}[0] (offset 2): the output layout changed" in inner.stderr
    ), inner.stderr[-3000:]
