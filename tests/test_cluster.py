"""Scale-out: the clicks and top_users jobs as a cluster of 2 processes on loopback
(`-i 0/1 -a "127.0.0.1:P0;127.0.0.1:P1"`, from the launcher) write exactly what a 1-worker run writes."""

from __future__ import annotations

import os
import subprocess
from collections import Counter

import orjson
import pytest

from clickstream.broker import free_port
from clickstream.generate import GenerateOptions, produce
from clickstream.read_topic import read_all
from conftest import ROOT, job_command

pytestmark = pytest.mark.broker

OPTIONS = GenerateOptions(
    users=120,
    clicks=4000,
    versions_per_user=3,
    seed=21,
    bad_fraction=0.02,
    unknown_fraction=0.05,
    span_seconds=3 * 3600,
    profiles_first=False,
)


def run(job: str, env: dict, processes: int) -> None:
    """The launcher turns BYTEWAX_ADDRESSES / BYTEWAX_PROCESS_ID into ``-i ID -a ADDRS``."""
    if processes == 1:
        procs = [subprocess.Popen(job_command(job), env=env, stderr=subprocess.PIPE, text=True)]
    else:
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
        procs = [
            subprocess.Popen(
                job_command(job),
                stderr=subprocess.PIPE,
                text=True,
                env={**env, "BYTEWAX_ADDRESSES": addresses, "BYTEWAX_PROCESS_ID": str(i)},
            )
            for i in range(processes)
        ]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]


def outputs(broker, topics) -> dict:
    """Every output topic's records as a multiset of (key, value) (values canonical JSON)."""
    out = {}
    for name in topics:
        records = read_all(broker.bootstrap_servers, name)
        kind = name.rsplit("_", 1)[-1]
        if kind == "dlq":  # original bytes, compared as they are
            out[kind] = Counter((r.key, r.value) for r in records)
        else:
            out[kind] = Counter(
                (r.key, orjson.dumps(orjson.loads(r.value), option=orjson.OPT_SORT_KEYS)) for r in records
            )
    return out


@pytest.fixture(scope="module")
def inputs(broker):
    suffix = os.urandom(3).hex()
    clicks, profiles = f"cluster_clicks_{suffix}", f"cluster_profiles_{suffix}"
    broker.create_topics({clicks: 4, profiles: 2})
    report = produce(OPTIONS, {"bootstrap.servers": broker.bootstrap_servers}, profiles, clicks)
    assert report.delivery_failures == 0
    return clicks, profiles


def env_for(broker, **settings) -> dict:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TAIL": "false",
        "PROFILE_TTL_SECONDS": "1800",
        **settings,
    }


def test_clicks_job_on_two_processes_equals_one_worker(broker, inputs, topic_names):
    clicks, profiles = inputs
    results = []
    for processes in (1, 2):
        t = topic_names("joined", "unmatched", "dlq")
        broker.create_topics({t["joined"]: 3, t["unmatched"]: 1, t["dlq"]: 1})
        run(
            "clicks",
            env_for(
                broker,
                CLICKS_TOPIC=clicks,
                PROFILES_TOPIC=profiles,
                JOIN_MODE="inner",
                JOINED_TOPIC=t["joined"],
                UNMATCHED_TOPIC=t["unmatched"],
                DLQ_TOPIC=t["dlq"],
            ),
            processes,
        )
        results.append(outputs(broker, t.values()))
    one, two = results
    assert sum(one["joined"].values()) > 1000 and sum(one["unmatched"].values()) > 100
    assert sum(one["dlq"].values()) > 50
    assert two == one


def test_top_users_job_on_two_processes_equals_one_worker(broker, inputs, topic_names):
    clicks, _ = inputs
    results = []
    for processes in (1, 2):
        t = topic_names("top", "late", "dlq")
        broker.create_topics({t["top"]: 1, t["late"]: 1, t["dlq"]: 1})
        run(
            "top_users",
            env_for(
                broker,
                CLICKS_TOPIC=clicks,
                TOP_USERS_TOPIC=t["top"],
                LATE_TOPIC=t["late"],
                DLQ_TOPIC=t["dlq"],
                TOP_N="5",
            ),
            processes,
        )
        results.append(outputs(broker, t.values()))
    one, two = results
    assert sum(one["top"].values()) == 6  # 3 h in 30-minute windows
    assert two == one
