"""The launcher's side effects: first-start recovery init with the real
``python -m bytewax.recovery`` (per-pod partition ownership, the marker,
pruning a resumed store), the container entrypoint script (prints the command,
never a secret), and end to end on the real broker: two processes started
exactly as two pods of the StatefulSet (``entrypoint.sh`` with
HOSTNAME=clicks-0 / clicks-1) form one Bytewax cluster and write exactly the
expected joined output.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from clickstream import launch
from conftest import ROOT
from test_launch import plan

ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"

# --- recovery initialisation (real python -m bytewax.recovery) ------------------------


def part_counts(path: Path):
    with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as db:  # writes nothing
        return db.execute("SELECT part_index, part_count FROM parts").fetchall()


def test_recovery_store_is_created_once_then_reused(tmp_path):
    store = tmp_path / "recovery"  # does not exist yet: created
    p = plan({"HOSTNAME": "x", "JOB": "clicks", "RECOVERY_DIR": str(store), "RECOVERY_PARTITIONS": "2"})
    assert launch.init_recovery(p) is True
    files = sorted(f.name for f in store.iterdir())
    assert files == [launch.MARKER, "part-0.sqlite3", "part-1.sqlite3"]  # no scratch directory left
    assert part_counts(store / "part-1.sqlite3") == [(1, 2)]
    before = {f: (store / f).stat().st_mtime_ns for f in files}
    # Second start: nothing is created or touched, whatever RECOVERY_PARTITIONS says now.
    p2 = plan({"HOSTNAME": "x", "JOB": "clicks", "RECOVERY_DIR": str(store), "RECOVERY_PARTITIONS": "5"})
    assert launch.init_recovery(p2) is False
    assert {f.name: f.stat().st_mtime_ns for f in store.iterdir()} == before


def test_each_pod_creates_only_its_own_partition(tmp_path):
    dirs = [tmp_path / f"pod-{i}" for i in range(3)]
    for i, d in enumerate(dirs):
        env = {"HOSTNAME": f"clicks-{i}", "JOB": "clicks", "BYTEWAX_REPLICAS": "3",
               "RECOVERY_DIR": str(d), "RECOVERY_PARTITIONS": "2"}  # fmt: skip
        launch.init_recovery(plan(env))
    assert [sorted(f.name for f in d.glob("part-*")) for d in dirs] == [
        ["part-0.sqlite3"],
        ["part-1.sqlite3"],
        [],
    ]
    # Together they form one store of 2 partitions, each exactly once.
    assert part_counts(dirs[0] / "part-0.sqlite3") == [(0, 2)]
    assert part_counts(dirs[1] / "part-1.sqlite3") == [(1, 2)]


def test_a_directory_whose_partitions_were_moved_away_is_not_initialised_again(tmp_path):
    """Scaling below RECOVERY_PARTITIONS: pod 1's partition is moved to pod 0's
    volume. When pod 1 comes back, an empty new part-1 would duplicate it."""
    pods = [tmp_path / "pod-0", tmp_path / "pod-1"]
    envs = [
        {
            "HOSTNAME": f"clicks-{i}",
            "JOB": "clicks",
            "BYTEWAX_REPLICAS": "2",
            "RECOVERY_DIR": str(d),
            "RECOVERY_PARTITIONS": "2",
        }
        for i, d in enumerate(pods)
    ]
    assert [launch.init_recovery(plan(e)) for e in envs] == [True, True]
    os.replace(pods[1] / "part-1.sqlite3", pods[0] / "part-1.sqlite3")  # scaled down to 1
    assert launch.init_recovery(plan(envs[1])) is False  # scaled back up to 2
    assert list(pods[1].glob("part-*")) == []
    assert sorted(f.name for f in pods[0].glob("part-*")) == ["part-0.sqlite3", "part-1.sqlite3"]


def test_a_resumed_store_is_pruned_when_the_pod_holds_all_of_it(tmp_path, capsys):
    """Uncommitted snapshots (clickstream.recovery_store) are dropped on resume;
    a pod holding only part of a spread store says why it cannot."""
    whole, spread = tmp_path / "whole", tmp_path / "pod-1"
    env = {"HOSTNAME": "clicks-0", "JOB": "clicks", "RECOVERY_DIR": str(whole)}
    assert launch.init_recovery(plan(env)) is True
    with sqlite3.connect(whole / "part-0.sqlite3") as db:  # a killed run's epoch-1 snapshot
        db.execute(
            "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES ('s', 'k', 1, NULL)"
        )
    capsys.readouterr()
    assert launch.init_recovery(plan(env)) is False
    assert "recovery: resuming at epoch 1; pruned 1 uncommitted snapshot(s)" in capsys.readouterr().err
    with sqlite3.connect(whole / "part-0.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM snaps").fetchone() == (0,)

    pod1 = {"HOSTNAME": "clicks-1", "JOB": "clicks", "BYTEWAX_REPLICAS": "2",
            "RECOVERY_DIR": str(spread), "RECOVERY_PARTITIONS": "2"}  # fmt: skip
    assert launch.init_recovery(plan(pod1)) is True
    capsys.readouterr()
    assert launch.init_recovery(plan(pod1)) is False
    assert (
        "recovery: warning: uncommitted snapshots not pruned: "
        f"{spread} holds 1 of the store's 2 partitions (missing [0])"
    ) in capsys.readouterr().err


def run_entrypoint(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PYTHON": sys.executable,
        "BYTEWAX_DNS_WAIT_SECONDS": "0",
    }
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env={**base, **env}, capture_output=True, text=True, timeout=timeout
    )


def test_entrypoint_script_inits_recovery_and_prints_the_command_without_secrets(tmp_path):
    assert os.access(ENTRYPOINT, os.X_OK), "deploy/entrypoint.sh must be executable"
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)]).returncode == 0
    if shutil.which("dash"):  # a strict POSIX shell, as in slim Debian images
        assert subprocess.run(["dash", "-n", str(ENTRYPOINT)]).returncode == 0
    secret = "s3cr3t-Pa55word-xyz"
    env = {
        "HOSTNAME": "clicks-1", "JOB": "clicks", "BYTEWAX_REPLICAS": "2",
        "RECOVERY_DIR": str(tmp_path / "r"), "RECOVERY_PARTITIONS": "2",
        "KAFKA_SASL_USERNAME": "clicks-job", "KAFKA_SASL_PASSWORD": secret,
    }  # fmt: skip
    # `--help` goes to bytewax.run, which prints its usage and exits 0.
    proc = run_entrypoint(env, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m bytewax.run" in proc.stdout
    assert "entrypoint: job clicks: process 1 of 2" in proc.stderr
    assert (
        f"entrypoint: exec {sys.executable} -m bytewax.run dataflows.clicks -i 1 "
        f"-a 'clicks-0.clicks:2101;clicks-1.clicks:2101' -r {tmp_path / 'r'} -s 10 -b 0 --help"
    ) in proc.stderr
    assert "bytewax.recovery" in proc.stderr and "keeping partitions [1]" in proc.stderr
    assert sorted(f.name for f in (tmp_path / "r").iterdir()) == [launch.MARKER, "part-1.sqlite3"]
    assert secret not in proc.stdout + proc.stderr
    # A bad configuration: exit status 2 and one line saying why.
    bad = run_entrypoint({"HOSTNAME": "clicks-0", "JOB": "nope"})
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "entrypoint: error: unknown job 'nope' (one of alerts, clicks, sessions, top_users)"
    ]


# --- end to end: two pods' processes on the real broker --------------------------------


@pytest.mark.broker
def test_two_pods_form_one_cluster_and_write_exactly_the_expected_output(broker, topic_names, tmp_path):
    from clickstream.broker import free_port
    from clickstream.generate import produce
    from test_e2e_clicks import OPTIONS, TTL_S, Expected, clicks_job_topics, dead_letters, joined_outcomes

    topics = clicks_job_topics(broker, topic_names)
    report = produce(
        OPTIONS, {"bootstrap.servers": broker.bootstrap_servers}, topics["profiles"], topics["clicks"]
    )
    assert report.delivery_failures == 0
    expected = Expected(OPTIONS, TTL_S)

    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    common = {
        "JOB": "clicks",
        "BYTEWAX_ADDRESSES": addresses,
        "RECOVERY_PARTITIONS": "2",
        "RECOVERY_SNAPSHOT_SECONDS": "1",
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TAIL": "false",
        "PROFILE_TTL_SECONDS": str(TTL_S),
        "JOIN_MODE": "left",
        "CLICKS_TOPIC": topics["clicks"],
        "PROFILES_TOPIC": topics["profiles"],
        "JOINED_TOPIC": topics["joined"],
        "UNMATCHED_TOPIC": topics["unmatched"],
        "DLQ_TOPIC": topics["dlq"],
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PYTHON": sys.executable,
    }
    stores = [tmp_path / f"clicks-{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            ["sh", str(ENTRYPOINT)],
            env={**common, "HOSTNAME": f"clicks-{i}", "RECOVERY_DIR": str(stores[i])},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=120))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for i, (proc, (_, err)) in enumerate(zip(procs, outputs, strict=False)):
        assert proc.returncode == 0, f"clicks-{i}:\n{err[-4000:]}"
        assert f"dataflows.clicks -i {i} -a '{addresses}' -r {stores[i]} -s 1 -b 0" in err

    joined = joined_outcomes(broker, topics["joined"])
    assert joined == expected.matched + expected.unmatched
    assert sum(joined.values()) == expected.valid_clicks
    assert joined_outcomes(broker, topics["unmatched"]) == Counter()
    assert dead_letters(broker, topics["dlq"]) == expected.dead
    # Each pod created and kept its own partition of one 2-partition store, and
    # the cluster committed snapshots into both.
    for i, store in enumerate(stores):
        assert sorted(f.name for f in store.glob("part-*.sqlite3")) == [f"part-{i}.sqlite3"]
        assert part_counts(store / f"part-{i}.sqlite3") == [(i, 2)]
        with sqlite3.connect(store / f"part-{i}.sqlite3") as db:
            assert db.execute("SELECT COUNT(*) FROM commits").fetchone()[0] == 1


def test_deprecated_run_job_alias_maps_its_flags_to_the_launcher(tmp_path):
    store = tmp_path / "r"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "clickstream.run_job",
            "clicks",
            "--recovery-dir",
            str(store),
            "--snapshot-seconds",
            "1",
            "--",
            "--help",
        ],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "HOSTNAME": "x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m bytewax.run" in proc.stdout
    assert "entrypoint: warning: python -m clickstream.run_job is deprecated" in proc.stderr
    assert f"-m bytewax.run dataflows.clicks -r {store} -s 1 -b 0 --help" in proc.stderr
    assert (store / "part-0.sqlite3").exists()


def test_a_fractional_snapshot_interval_stops_the_launcher_with_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "clickstream.launch", "clicks"],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "HOSTNAME": "x",
            "RECOVERY_DIR": "/nonexistent/r",
            "SNAPSHOT_SECONDS": "0.5",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "entrypoint: error: SNAPSHOT_SECONDS must be a whole number (got '0.5'): bytewax.run takes whole seconds"
    ]
