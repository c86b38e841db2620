"""Input that vanished (issue 12): the broker loses its data, the topics are
recreated with fewer records, and a job resumes from its recovery store, whose
input offsets now lie past the partitions' ends. ``ON_INPUT_OFFSET_OUT_OF_RANGE``
decides: ``fail`` (default) stops with one line, ``latest`` skips what the new
partitions hold, ``earliest`` processes every new click exactly once.

The test runs its own broker (the session one must keep its data) and restarts
it on the same port: Tansu keeps topics in memory only, as the issue's probe did.

The recreated output topic lost its records too, so the exactly-once sink's
stored offsets would also lie past its end (another issue-12 item); here the
output partitions are refilled with marker records up to their old ends, so
the runs below exercise the input policy alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from clickstream.broker import LocalBroker
from clickstream.read_topic import read_all
from conftest import ROOT, job_command
from test_group_offsets import env_for, produce

pytestmark = pytest.mark.broker

USERS = 10
FIRST_CLICKS = 120  # before the broker restart: 60 per partition
NEW_CLICKS = 40  # after it: 20 per partition, below the stored offsets
FILLER = b"filler: the output partition's old end"
TOPICS = {"clicks": 2, "profiles": 1, "joined": 2, "dlq": 1}


def clicks(first_n: int, count: int) -> list[dict]:
    now = int(time.time() * 1000)
    return [{"user_id": f"u{n % USERS}", "ts": now, "n": n} for n in range(first_n, first_n + count)]


def fill_topics(bootstrap: str, t: dict, first_n: int, count: int) -> list[int]:
    """Profiles, then ``count`` clicks numbered from ``first_n``: the clicks per partition."""
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    profiles = [{"user_id": f"u{u}", "updated_at": an_hour_ago} for u in range(USERS)]
    produce(bootstrap, t["profiles"], profiles, 1)
    return produce(bootstrap, t["clicks"], clicks(first_n, count), TOPICS["clicks"])


def run_job(broker: LocalBroker, t: dict, store, **extra: str) -> tuple[subprocess.CompletedProcess, float]:
    env = env_for(broker, t, KAFKA_TAIL="false", RECOVERY_DIR=str(store), **extra)
    started = time.monotonic()
    proc = subprocess.run(
        job_command("clicks"), env=env, capture_output=True, text=True, timeout=180, cwd=ROOT
    )
    return proc, time.monotonic() - started


def click_numbers(bootstrap: str, topic: str) -> Counter:
    """How often each click (its ``n``) appears in the output, markers left out."""
    out = read_all(bootstrap, topic, timeout_s=60)
    return Counter(orjson.loads(r.value)["click"]["n"] for r in out if r.value != FILLER)


@pytest.fixture(scope="module")
def recreated(tmp_path_factory):
    """A finished run's recovery store, then a broker restart with the topics
    recreated holding fewer clicks. Yields (broker, topics, store, old and new
    clicks per partition)."""
    store = tmp_path_factory.mktemp("oor") / "recovery"
    t = {name: f"oor_{name}" for name in TOPICS}
    broker = LocalBroker.start()
    try:
        broker.create_topics({t[name]: n for name, n in TOPICS.items()})
        old = fill_topics(broker.bootstrap_servers, t, 0, FIRST_CLICKS)
        proc, _ = run_job(broker, t, store)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert click_numbers(broker.bootstrap_servers, t["joined"]) == Counter(range(FIRST_CLICKS))
        joined_ends = Counter(r.partition for r in read_all(broker.bootstrap_servers, t["joined"]))
        port = broker.port
        broker.stop()
        broker = LocalBroker.start(port=port)  # memory only: every topic is gone
        assert t["clicks"] not in broker.topic_partitions()
        broker.create_topics({t[name]: n for name, n in TOPICS.items()})
        new = fill_topics(broker.bootstrap_servers, t, 1000, NEW_CLICKS)
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
        for partition, end in joined_ends.items():
            for _ in range(end):
                producer.produce(t["joined"], FILLER, partition=partition)
        assert producer.flush(30) == 0
        assert old == [60, 60] and new == [20, 20]
        yield broker, t, store, old, new
    finally:
        broker.stop()


def copy_of(store, tmp_path):
    return shutil.copytree(store, tmp_path / "recovery")


FAIL_LINE = re.compile(
    r"input offset out of range: topic '(?P<topic>[^']+)' partition (?P<partition>\d+) "
    r"stored offset (?P<stored>\d+), partition holds (?P<low>\d+)\.\.(?P<high>\d+) "
    r"\(ON_INPUT_OFFSET_OUT_OF_RANGE=fail; set earliest or latest to resume there, "
    r"or reset the recovery directory\)"
)


def test_by_default_a_stored_offset_past_the_new_end_stops_the_job_with_one_line(recreated, tmp_path):
    broker, t, store, old, new = recreated
    proc, took = run_job(broker, t, copy_of(store, tmp_path))
    assert proc.returncode != 0, proc.stderr[-3000:]
    found = FAIL_LINE.search(proc.stderr)
    assert found, proc.stderr[-3000:]
    partition = int(found["partition"])
    assert found["topic"] == t["clicks"]
    assert (int(found["stored"]), int(found["low"]), int(found["high"])) == (
        old[partition],
        0,
        new[partition],
    )
    assert click_numbers(broker.bootstrap_servers, t["joined"]) == Counter()
    print(f"fail: exited {proc.returncode} after {took:.1f} s")


def resumed_at(stderr: str, topic: str, policy: str) -> dict[int, tuple[int, int]]:
    """Partition -> (stored offset, offset resumed at) from the policy's WARNING lines."""
    line = re.compile(
        rf"input offset out of range: topic '{re.escape(topic)}' partition (\d+) stored offset (\d+), "
        rf"partition holds 0\.\.\d+ \(ON_INPUT_OFFSET_OUT_OF_RANGE={policy}\): resuming at offset (\d+)"
    )
    return {int(p): (int(stored), int(at)) for p, stored, at in line.findall(stderr)}


def test_latest_resumes_at_the_new_ends_and_processes_nothing_already_there(recreated, tmp_path):
    # Runs before the earliest test: both read the same output topic.
    broker, t, store, old, new = recreated
    proc, _ = run_job(broker, t, copy_of(store, tmp_path), ON_INPUT_OFFSET_OUT_OF_RANGE="latest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert resumed_at(proc.stderr, t["clicks"], "latest") == {p: (old[p], new[p]) for p in (0, 1)}
    assert click_numbers(broker.bootstrap_servers, t["joined"]) == Counter()


def test_earliest_processes_every_new_click_exactly_once(recreated, tmp_path):
    broker, t, store, old, _new = recreated
    proc, took = run_job(broker, t, copy_of(store, tmp_path), ON_INPUT_OFFSET_OUT_OF_RANGE="earliest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert resumed_at(proc.stderr, t["clicks"], "earliest") == {p: (old[p], 0) for p in (0, 1)}
    assert click_numbers(broker.bootstrap_servers, t["joined"]) == Counter(range(1000, 1000 + NEW_CLICKS))
    print(f"earliest: finished after {took:.1f} s")
