"""Crash tests on the real broker: jobs tailing with Bytewax recovery are killed
with SIGKILL at random points (snapshots every second, so some kills land
during one) and restarted each time, alternately with 1 and 2 workers (a
stop-start rescale); at the end every output record exists exactly once.

The fast version runs in ``make test``. The long one (200k clicks, 12 kills):
``CRASH_TEST_CLICKS=200000 CRASH_TEST_KILLS=12 make crash-test``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from clickstream.generate import GenerateOptions, generate_records, produce
from clickstream.read_topic import read_all
from conftest import ROOT, job_command
from operators.record_mapping import parse_click
from operators.records import DeadLetter, SourceRecord

pytestmark = pytest.mark.broker

CLICKS = int(os.environ.get("CRASH_TEST_CLICKS", "20000"))
KILLS = int(os.environ.get("CRASH_TEST_KILLS", "4"))
SEED = int(os.environ.get("CRASH_TEST_SEED", str(random.randrange(1_000_000))))


def start_job(job: str, env: dict, recovery: Path, log_path: Path, workers: int = 1) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - the job writes it for its whole life
    return subprocess.Popen(
        job_command(job, "-w", str(workers)),
        env={**env, "RECOVERY_DIR": str(recovery), "RECOVERY_SNAPSHOT_SECONDS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(timeout=30)


def produce_clicks_slowly(bootstrap: str, topic: str, options: GenerateOptions, seconds: float):
    """Produce the click records of ``options`` spread over ``seconds`` (a thread)."""
    records = [r for r in generate_records(options) if r.topic_role == "clicks"]

    def run():
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        chunk = max(1, len(records) // 50)
        for i in range(0, len(records), chunk):
            for r in records[i : i + chunk]:
                kwargs = {"timestamp": r.timestamp_ms} if r.timestamp_ms is not None else {}
                producer.produce(topic, r.value, r.key, **kwargs)
            producer.flush()
            time.sleep(seconds / 50)
        assert producer.flush(30) == 0

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def classify_clicks(bootstrap: str, topic: str):
    """Lineage ids of the valid and of the bad records in the clicks topic."""
    valid, bad = set(), set()
    now_ms = int(time.time() * 1000)
    for rec in read_all(bootstrap, topic, timeout_s=60):
        source = SourceRecord(rec.partition, rec.offset, rec.key, rec.value, rec.timestamp_ms, rec.headers)
        coords = f"{topic}/{rec.partition}/{rec.offset}".encode()
        if type(parse_click(source, topic, now_ms)) is not DeadLetter:
            valid.add(coords)
        else:
            bad.add(b"dlq:" + coords)
    return valid, bad


def lineages(bootstrap: str, topic: str) -> Counter:
    out: Counter = Counter()
    for rec in read_all(bootstrap, topic, timeout_s=60):
        out[dict(rec.headers or [])["lineage"]] += 1
    return out


def describe_duplicates(bootstrap: str, topic: str, duplicated: dict, log_path: Path) -> str:
    """Where the copies of a few duplicated records sit, and what the job logged
    about restarts and read-backs: enough to tell a replay from a broker-side
    double append."""
    copies: dict = {}
    for rec in read_all(bootstrap, topic, timeout_s=60):
        lineage = dict(rec.headers or [])["lineage"]
        if lineage in duplicated:
            copies.setdefault(lineage, []).append((rec.partition, rec.offset))
    lines = [f"{k.decode()}: {v}" for k, v in sorted(copies.items())[:10]]
    logged = [
        line
        for line in log_path.read_text(errors="replace").splitlines()
        if "entrypoint:" in line or "not be written again" in line or "Error" in line
    ]
    return "\n".join(["copies (partition, offset):", *lines, "job log:", *logged[-60:]])


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll_s)


def base_env(broker) -> dict:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TAIL": "true",
    }


def kill_and_restart(job: str, env: dict, recovery: Path, log: Path, kills: int, rng: random.Random):
    """Start the job, kill -9 it `kills` times at random moments, restart each time,
    alternating 1 and 2 workers (resuming with another worker count).
    Returns the process left running."""
    proc = start_job(job, env, recovery, log, workers=1)
    for n in range(kills):
        time.sleep(rng.uniform(1.0, 3.0))
        assert proc.poll() is None, log.read_text()[-3000:]
        kill(proc)
        proc = start_job(job, env, recovery, log, workers=2 if n % 2 == 0 else 1)
    return proc


def test_clicks_job_killed_repeatedly_writes_each_click_exactly_once(broker, topic_names, tmp_path):
    rng = random.Random(SEED)
    t = topic_names("clicks", "profiles", "joined", "dlq")
    broker.create_topics({t["clicks"]: 3, t["profiles"]: 2, t["joined"]: 2, t["dlq"]: 1})
    options = GenerateOptions(
        users=500,
        clicks=CLICKS,
        versions_per_user=2,
        seed=SEED % 1000,
        bad_fraction=0.01,
        unknown_fraction=0.02,
    )
    profiles_only = GenerateOptions(**{**options.__dict__, "clicks": 0, "bad_fraction": 0.0})
    produce(profiles_only, {"bootstrap.servers": broker.bootstrap_servers}, t["profiles"], t["clicks"])
    producing = produce_clicks_slowly(broker.bootstrap_servers, t["clicks"], options, seconds=KILLS * 2.0)

    env = {
        **base_env(broker),
        "CLICKS_TOPIC": t["clicks"],
        "PROFILES_TOPIC": t["profiles"],
        "JOINED_TOPIC": t["joined"],
        "DLQ_TOPIC": t["dlq"],
    }
    recovery, log = tmp_path / "recovery", tmp_path / "job.log"
    proc = kill_and_restart("clicks", env, recovery, log, KILLS, rng)
    try:
        producing.join(timeout=600)
        valid, bad = classify_clicks(broker.bootstrap_servers, t["clicks"])
        assert len(valid) >= CLICKS * 0.95 and len(bad) > 0
        wait_for(
            lambda: sum(lineages(broker.bootstrap_servers, t["joined"]).values()) >= len(valid),
            240,
            "every click to be joined",
        )
        time.sleep(2)  # anything extra (a duplicate) would have arrived by now
        joined = lineages(broker.bootstrap_servers, t["joined"])
        dead = lineages(broker.bootstrap_servers, t["dlq"])
    finally:
        kill(proc, signal.SIGTERM)
    duplicated = {k: n for k, n in joined.items() if n > 1}
    assert duplicated == {}, (
        f"seed {SEED}: {len(duplicated)} clicks written more than once\n"
        + describe_duplicates(broker.bootstrap_servers, t["joined"], duplicated, log)
    )
    assert set(joined) == valid, f"seed {SEED}: missing {len(valid - set(joined))}"
    assert dead == Counter({k: 1 for k in bad}), f"seed {SEED}"
    assert "Traceback" not in log.read_text().replace("KeyboardInterrupt", "")


def test_top_users_job_killed_repeatedly_emits_each_window_once(broker, topic_names, tmp_path):
    rng = random.Random(SEED + 1)
    t = topic_names("clicks", "top", "late", "dlq")
    broker.create_topics({t["clicks"]: 3, t["top"]: 1, t["late"]: 1, t["dlq"]: 1})
    options = GenerateOptions(
        users=60,
        clicks=CLICKS,
        versions_per_user=1,
        seed=SEED % 1000 + 1,
        span_seconds=6 * 3600,
        bad_fraction=0.01,
    )
    producing = produce_clicks_slowly(broker.bootstrap_servers, t["clicks"], options, seconds=KILLS * 2.0)
    env = {
        **base_env(broker),
        "CLICKS_TOPIC": t["clicks"],
        "TOP_USERS_TOPIC": t["top"],
        "LATE_TOPIC": t["late"],
        "DLQ_TOPIC": t["dlq"],
        "WINDOW_SECONDS": "1800",
        "TOP_N": "5",
    }
    recovery, log = tmp_path / "recovery", tmp_path / "job.log"
    proc = kill_and_restart("top_users", env, recovery, log, KILLS, rng)
    try:
        producing.join(timeout=600)
        from test_e2e_top_users import expected_windows  # the independent brute force

        expected = expected_windows_for(options, expected_windows)
        wait_for(
            lambda: len(read_all(broker.bootstrap_servers, t["top"])) >= len(expected), 240, "every window"
        )
        time.sleep(2)
        records = read_all(broker.bootstrap_servers, t["top"])
    finally:
        kill(proc, signal.SIGTERM)
    keys = Counter(r.key for r in records)
    assert {k: n for k, n in keys.items() if n > 1} == {}, f"seed {SEED}: a window emitted twice"
    assert {r.key.decode(): orjson.loads(r.value) for r in records} == expected, f"seed {SEED}"


def expected_windows_for(options: GenerateOptions, expected_windows) -> dict:
    import test_e2e_top_users as top

    saved = (top.WINDOW_S, top.TOP_N)
    top.WINDOW_S, top.TOP_N = 1800, 5
    try:
        return expected_windows(options)
    finally:
        top.WINDOW_S, top.TOP_N = saved


def test_broker_stall_of_15_seconds_loses_and_duplicates_nothing(broker, topic_names, tmp_path):
    """SIGSTOP the broker for 15 s mid-run, then SIGCONT: the job rides it out
    (librdkafka retries; the sink's flush waits) and every click is written once."""
    t = topic_names("clicks", "profiles", "joined", "dlq")
    broker.create_topics({t["clicks"]: 2, t["profiles"]: 1, t["joined"]: 2, t["dlq"]: 1})
    options = GenerateOptions(users=200, clicks=6000, versions_per_user=1, seed=3, bad_fraction=0.01)
    profiles_only = GenerateOptions(**{**options.__dict__, "clicks": 0, "bad_fraction": 0.0})
    produce(profiles_only, {"bootstrap.servers": broker.bootstrap_servers}, t["profiles"], t["clicks"])
    producing = produce_clicks_slowly(broker.bootstrap_servers, t["clicks"], options, seconds=6)
    env = {
        **base_env(broker),
        "CLICKS_TOPIC": t["clicks"],
        "PROFILES_TOPIC": t["profiles"],
        "JOINED_TOPIC": t["joined"],
        "DLQ_TOPIC": t["dlq"],
    }
    recovery, log = tmp_path / "recovery", tmp_path / "job.log"
    proc = start_job("clicks", env, recovery, log)
    restarts = 0
    try:
        time.sleep(3)
        broker.pause()
        try:
            time.sleep(15)
        finally:
            broker.resume()
        producing.join(timeout=120)
        valid, bad = classify_clicks(broker.bootstrap_servers, t["clicks"])

        def all_joined() -> bool:
            nonlocal proc, restarts
            if proc.poll() is not None:  # died: restart it, recovery replays
                restarts += 1
                proc = start_job("clicks", env, recovery, log)
            return sum(lineages(broker.bootstrap_servers, t["joined"]).values()) >= len(valid)

        wait_for(all_joined, 180, "every click to be joined after the stall")
        time.sleep(2)
        joined = lineages(broker.bootstrap_servers, t["joined"])
        dead = lineages(broker.bootstrap_servers, t["dlq"])
    finally:
        kill(proc, signal.SIGTERM)
    print(f"restarts after the stall: {restarts}")
    assert {k: n for k, n in joined.items() if n > 1} == {}
    assert set(joined) == valid
    assert dead == Counter({k: 1 for k in bad})
