"""A cluster peer dies or is stopped (issue 12 regression): the clicks job
tails as 2 processes with recovery (each process its own store directory, as
two pods); once output flows, one process gets SIGKILL and the other must exit
non-zero on its own (it lost its peer; a process that hung on instead would
hold the cluster up forever). Or one process alone gets SIGTERM, as one pod of
a rolling update: it must exit 0 at once although its peer runs on, and the
peer then exits non-zero. Both are restarted on the same stores, the rest of the clicks is
produced, and the output is compared in full with the expected output computed
independently (``test_e2e_clicks.Expected``): every click exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from clickstream.broker import free_port
from clickstream.generate import generate_records
from clickstream.read_topic import read_all
from conftest import ROOT, job_command
from connectors.kafka_io import produce_all
from test_crash_recovery import kill, wait_for
from test_e2e_clicks import OPTIONS, TTL_S, Expected, clicks_job_topics, dead_letters, joined_outcomes

pytestmark = pytest.mark.broker

#: The contract says the surviving peer exits within 10 s; the time is measured
#: and printed (well under a second here: the peer connection resets at once).
#: The assertion allows 30 s so that a loaded 2-core machine cannot make it
#: flake, while a peer that hangs on (the regression) still fails.
EXIT_LIMIT_S = 30.0


def produce_records(bootstrap: str, topics: dict, records) -> None:
    """Produce generated records to their topics (by role), with their timestamps."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    messages = (
        (
            topics[r.topic_role],
            {
                "key": r.key,
                "value": r.value,
                **({"timestamp": r.timestamp_ms} if r.timestamp_ms is not None else {}),
            },
        )
        for r in records
    )
    produce_all(producer, messages)


def start_cluster(env: dict, stores: list[Path], log: Path) -> list[subprocess.Popen]:
    """Both processes through the launcher, each in its own process group."""
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in stores)
    out = open(log, "ab")  # noqa: SIM115 - the processes write it for their whole life
    return [
        subprocess.Popen(
            job_command("clicks"),
            env={
                **env,
                "BYTEWAX_ADDRESSES": addresses,
                "BYTEWAX_PROCESS_ID": str(i),
                "RECOVERY_DIR": str(store),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )
        for i, store in enumerate(stores)
    ]


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to every process at once, SIGKILL to any still running 30 s later."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill(proc)


def output_count(bootstrap: str, topics: dict) -> int:
    return sum(
        len(read_all(bootstrap, topics[kind], timeout_s=60)) for kind in ("joined", "unmatched", "dlq")
    )


@pytest.mark.parametrize(("how", "killed"), [("SIGKILL", 0), ("SIGKILL", 1), ("SIGTERM", 1)])
def test_killing_one_peer_stops_the_other_and_a_restart_writes_each_click_once(
    broker, topic_names, tmp_path, how, killed
):
    bootstrap = broker.bootstrap_servers
    topics = clicks_job_topics(broker, topic_names)
    # Event times from now on: a tailing job takes what arrives after it caught
    # up as fresh (the click watermark follows the wall clock), so the second
    # half of a backfill would come too late for profiles already let go.
    options = dataclasses.replace(OPTIONS, start=datetime.now(UTC).isoformat(timespec="seconds"))
    records = list(generate_records(options))
    clicks = [r for r in records if r.topic_role == "clicks"]
    expected = Expected(options, TTL_S)  # from the records, whatever order they are produced in
    # Every profile first: a tailing as-of join then matches as on the full history.
    produce_records(bootstrap, topics, [r for r in records if r.topic_role == "profiles"])
    produce_records(bootstrap, topics, clicks[: len(clicks) // 2])

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TAIL": "true",
        "PROFILE_TTL_SECONDS": str(TTL_S),
        "JOIN_MODE": "inner",
        "PROFILE_WAIT_SECONDS": "1",  # every profile is there before any click
        "RECOVERY_PARTITIONS": "2",
        "RECOVERY_SNAPSHOT_SECONDS": "1",
        "CLICKS_TOPIC": topics["clicks"],
        "PROFILES_TOPIC": topics["profiles"],
        "JOINED_TOPIC": topics["joined"],
        "UNMATCHED_TOPIC": topics["unmatched"],
        "DLQ_TOPIC": topics["dlq"],
    }
    stores, log = [tmp_path / f"clicks-{i}" for i in range(2)], tmp_path / "cluster.log"
    procs = start_cluster(env, stores, log)
    try:
        wait_for(lambda: len(read_all(bootstrap, topics["joined"], timeout_s=60)) > 0, 120, "first output")
        assert [p.poll() for p in procs] == [None, None], log.read_text(errors="replace")[-3000:]
        survivor = procs[1 - killed]
        killed_at = time.monotonic()
        if how == "SIGKILL":
            kill(procs[killed])  # SIGKILL to its process group
        else:
            procs[killed].send_signal(signal.SIGTERM)  # the process only, as a pod's PID 1
            try:
                stopped_status = procs[killed].wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"process {killed} still runs 60 s after SIGTERM")
            stopped_s = time.monotonic() - killed_at
            print(f"process {killed} exited with status {stopped_status} {stopped_s:.2f} s after SIGTERM")
            assert stopped_status == 0, log.read_text(errors="replace")[-3000:]
            assert stopped_s < EXIT_LIMIT_S
        try:
            status = survivor.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process {1 - killed} still runs 60 s after its peer was killed")
        exit_s = time.monotonic() - killed_at
        print(f"process {1 - killed} exited with status {status} {exit_s:.2f} s after its peer's {how}")
        assert status != 0, log.read_text(errors="replace")[-3000:]
        assert exit_s < EXIT_LIMIT_S

        procs = start_cluster(env, stores, log)
        produce_records(bootstrap, topics, clicks[len(clicks) // 2 :])
        total = expected.valid_clicks + sum(expected.dead.values())
        wait_for(lambda: output_count(bootstrap, topics) >= total, 240, f"{total} output records")
    finally:
        stop(procs)
    # Both stopped: nothing more can arrive, so this is the whole output.
    joined = joined_outcomes(broker, topics["joined"])
    unmatched = joined_outcomes(broker, topics["unmatched"])
    assert joined == expected.matched
    assert unmatched == expected.unmatched
    assert dead_letters(broker, topics["dlq"]) == expected.dead
    assert sum(expected.unmatched.values()) > 100 and sum(expected.dead.values()) > 50
