"""A clean stop: SIGTERM ends a tailing job promptly with exit status 0, also
as PID 1 (as in a container, where a process without a handler ignores it),
and a restart on the same recovery store writes every click exactly once.

The job runs through the launcher as PID 1 of its own PID namespace
(``unshare --pid --fork --mount-proc``) while clicks stream in; it is stopped
once some output exists, restarted, and the output is compared in full.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from clickstream.read_topic import read_all
from conftest import ROOT, job_command

pytestmark = pytest.mark.broker

USERS = 30
CLICKS = 2000


def can_be_pid_1() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


def produce_live_clicks(bootstrap: str, topic: str) -> threading.Thread:
    def run() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for n in range(CLICKS):
            body = {"user_id": f"u{n % USERS}", "ts": int(time.time() * 1000), "n": n}
            producer.produce(topic, orjson.dumps(body), body["user_id"].encode())
            if n % 100 == 99:
                producer.flush()
                time.sleep(0.2)
        assert producer.flush(30) == 0

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def joined_lineages(bootstrap: str, topic: str) -> Counter:
    return Counter(dict(r.headers)["lineage"] for r in read_all(bootstrap, topic, timeout_s=60))


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def pid_1_of(unshare_pid: int) -> int:
    """The process ``unshare --fork`` started (PID 1 inside its namespace)."""
    children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_sigterm_stops_a_tailing_job_as_pid_1_with_status_0_and_the_restart_is_exact(
    broker, topic_names, tmp_path
):
    t = topic_names("clicks", "profiles", "joined", "dlq")
    broker.create_topics({t["clicks"]: 2, t["profiles"]: 1, t["joined"]: 2, t["dlq"]: 1})
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    for u in range(USERS):
        producer.produce(t["profiles"], orjson.dumps({"user_id": f"u{u}", "updated_at": an_hour_ago}))
    assert producer.flush(30) == 0
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "CLICKS_TOPIC": t["clicks"],
        "PROFILES_TOPIC": t["profiles"],
        "JOINED_TOPIC": t["joined"],
        "DLQ_TOPIC": t["dlq"],
        "RECOVERY_DIR": str(tmp_path / "recovery"),
        "RECOVERY_SNAPSHOT_SECONDS": "1",
    }
    as_pid_1 = can_be_pid_1()
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"] if as_pid_1 else []
    log = open(tmp_path / "job.log", "wb")  # noqa: SIM115 - the jobs write to it until the end
    first = subprocess.Popen(
        prefix + job_command("clicks"), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )
    producing = produce_live_clicks(broker.bootstrap_servers, t["clicks"])
    try:
        wait_for(
            lambda: len(joined_lineages(broker.bootstrap_servers, t["joined"])) > 100, 120, "first output"
        )
        target = pid_1_of(first.pid) if as_pid_1 else first.pid
        os.kill(target, signal.SIGTERM)
        # Well inside a pod's 30 s grace period (it measures well under a second here).
        returncode = first.wait(timeout=25)
    finally:
        if first.poll() is None:
            first.kill()
    text = (tmp_path / "job.log").read_text(errors="replace")
    assert returncode == 0, text[-3000:]
    assert "clicks: stopped by SIGTERM; a restart resumes from the last snapshot" in text
    producing.join(timeout=120)

    second = subprocess.Popen(job_command("clicks"), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_for(
            lambda: sum(joined_lineages(broker.bootstrap_servers, t["joined"]).values()) >= CLICKS,
            120,
            "every click after the restart",
        )
        time.sleep(2)  # a duplicate would have arrived by now
        joined = joined_lineages(broker.bootstrap_servers, t["joined"])
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=25) == 0
    assert {k: n for k, n in joined.items() if n > 1} == {}
    assert len(joined) == CLICKS
