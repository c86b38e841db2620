"""``python -m clickstream.status JOB``: per input partition the end offset,
the job's committed offset and lag, and where the recovery store has it, on
the real broker (ends read to the end: the local broker's high watermark is
wrong), plus the rendering from plain data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from confluent_kafka import Producer

from clickstream.status_report import JobStatus, PartitionRow, StoreState, render_table, to_json
from conftest import ROOT, job_command
from test_group_offsets import env_for, produce, topics


def run_status(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clickstream.status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def status_json(env: dict, job: str = "clicks") -> dict:
    proc = run_status(env, job, "--end-offsets", "read", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def by_partition(doc: dict, key: str) -> dict[str, list]:
    """``{topic: [value of key per partition]}`` from the JSON document."""
    out: dict[str, list] = {}
    for row in doc["partitions"]:
        assert row["partition"] == len(out.setdefault(row["topic"], []))
        out[row["topic"]].append(row[key])
    return out


# --- rendering from plain data ------------------------------------------------------


def sample(end_offsets: str = "read", ends: tuple[int, int] = (10, 7)) -> JobStatus:
    rows = [
        PartitionRow("clicks", 0, ends[0], committed=8, store_offset=6),
        PartitionRow("clicks", 1, ends[1]),
    ]
    store = StoreState("/data/r", "present", partitions=1, resume_epoch=5, last_snapshot_epoch=4,
                       state_keys=3, state_bytes=120)  # fmt: skip
    return JobStatus("clicks", "clickstream-clicks", end_offsets, rows, store)


def test_the_table_and_json_render_every_partition_and_a_total():
    status = sample()
    assert render_table(status) == [
        "job clicks: group clickstream-clicks, end offsets by read to the end",
        "recovery store: /data/r: 1 partition(s), last snapshot epoch 4, resumes at epoch 5, "
        "state 3 key(s) 120 bytes",
        "",
        "topic   partition  end  committed  lag  store offset  store lag",
        "------  ---------  ---  ---------  ---  ------------  ---------",
        "clicks          0   10          8    2             6          4",
        "clicks          1    7          -    -             -          -",
        "total               17          8    2             6          4",
    ]
    doc = to_json(status)
    assert doc["partitions"] == [
        {"topic": "clicks", "partition": 0, "end": 10, "committed": 8, "lag": 2, "store_offset": 6, "store_lag": 4},
        {"topic": "clicks", "partition": 1, "end": 7, "committed": None, "lag": None, "store_offset": None,
         "store_lag": None},
    ]  # fmt: skip
    assert doc["total"] == {"end": 17, "committed": 8, "lag": 2, "store_offset": 6, "store_lag": 4}
    assert doc["store"] == {
        "directory": "/data/r", "state": "present", "detail": None, "partitions": 1, "resume_epoch": 5,
        "last_snapshot_epoch": 4, "state_keys": 3, "state_bytes": 120,
    }  # fmt: skip
    assert (doc["job"], doc["group_id"], doc["end_offsets"], doc["started"]) == (
        "clicks", "clickstream-clicks", "read", True
    )  # fmt: skip
    assert doc["missing_topics"] == [] and doc["notes"] == []
    assert json.loads(json.dumps(doc)) == doc


def test_an_end_below_the_committed_offset_names_the_wrong_high_watermark():
    status = sample("watermark", ends=(1, 1))
    note = (
        "note: an end offset is below a committed or stored offset: the broker's high watermark "
        "looks wrong (the local Tansu broker's is); use --end-offsets read"
    )
    assert render_table(status)[-2:] == [
        "total                2          8   -7             6         -5",
        note,
    ]
    assert to_json(status)["notes"] == [note.removeprefix("note: ")]


# --- on the real broker -------------------------------------------------------------


@pytest.mark.broker
def test_a_job_never_started_says_so(broker, topic_names, tmp_path):
    t = topics(broker, topic_names)
    clicks = produce(broker.bootstrap_servers, t["clicks"], [{"user_id": "u1", "ts": 1}] * 5, 3)
    env = env_for(broker, t, RECOVERY_DIR=str(tmp_path / "recovery"))
    doc = status_json(env)
    assert doc["started"] is False
    assert doc["group_id"] == "clickstream-clicks"
    assert by_partition(doc, "end") == {t["clicks"]: clicks, t["profiles"]: [0, 0]}
    for key in ("committed", "lag", "store_offset", "store_lag"):
        assert by_partition(doc, key) == {t["clicks"]: [None] * 3, t["profiles"]: [None] * 2}
    assert doc["store"]["state"] == "empty" and doc["store"]["last_snapshot_epoch"] is None
    assert doc["notes"] == [
        "job clicks has never run: no committed offsets in group clickstream-clicks, no recovery store"
    ]
    table = run_status(env, "clicks", "--end-offsets", "read")
    assert table.returncode == 0, table.stderr
    assert f"recovery store: {tmp_path / 'recovery'}: no store there" in table.stdout
    assert table.stdout.splitlines()[-2].split() == ["total", str(sum(clicks)), "-", "-", "-", "-"]


@pytest.mark.broker
def test_a_finished_run_shows_no_lag_then_the_records_produced_after_it(broker, topic_names, tmp_path):
    t = topics(broker, topic_names)
    now = 1_767_225_600_000
    clicks = produce(
        broker.bootstrap_servers, t["clicks"], [{"user_id": f"u{n % 7}", "ts": now} for n in range(40)], 3
    )
    # one profile: profiles partition 1 stays empty, never read, so nothing committed or stored
    profiles = produce(broker.bootstrap_servers, t["profiles"], [{"user_id": "u1", "updated_at": now}], 2)
    assert profiles == [1, 0]
    env = env_for(broker, t, RECOVERY_DIR=str(tmp_path / "recovery"), RECOVERY_SNAPSHOT_SECONDS="1")
    run = subprocess.run(job_command("clicks"), env={**env, "KAFKA_TAIL": "false"},
                         capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]

    doc = status_json(env)
    assert doc["started"] is True
    assert by_partition(doc, "end") == {t["clicks"]: clicks, t["profiles"]: [1, 0]}
    for key in ("committed", "store_offset"):
        assert by_partition(doc, key) == {t["clicks"]: clicks, t["profiles"]: [1, None]}, key
    for key in ("lag", "store_lag"):
        assert by_partition(doc, key) == {t["clicks"]: [0, 0, 0], t["profiles"]: [0, None]}, key
    store = doc["store"]
    assert store["state"] == "present" and store["partitions"] == 1
    assert store["last_snapshot_epoch"] >= 1 and store["resume_epoch"] > store["last_snapshot_epoch"]
    assert store["state_keys"] > 0 and store["state_bytes"] > 0

    extra = [3, 0, 5]  # clicks produced into each partition after the run: never processed
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for partition, count in enumerate(extra):
        for _ in range(count):
            producer.produce(t["clicks"], b'{"user_id": "u1", "ts": 1767225600000}', partition=partition)
    assert producer.flush(30) == 0

    doc = status_json(env)
    assert by_partition(doc, "end") == {t["clicks"]: [c + e for c, e in zip(clicks, extra, strict=True)],
                                        t["profiles"]: profiles}  # fmt: skip
    for key in ("lag", "store_lag"):
        assert by_partition(doc, key) == {t["clicks"]: extra, t["profiles"]: [0, None]}, key
    total = sum(clicks) + sum(profiles)
    assert doc["total"] == {
        "end": total + 8,
        "committed": total,
        "lag": 8,
        "store_offset": total,
        "store_lag": 8,
    }
    table = run_status(env, "clicks", "--end-offsets", "read")
    assert table.stdout.splitlines()[-1].split() == [
        "total",
        str(total + 8),
        str(total),
        "8",
        str(total),
        "8",
    ]


@pytest.mark.broker
def test_bad_arguments_and_an_unreachable_broker_exit_2_with_one_line(broker, topic_names):
    t = topics(broker, topic_names)
    env = env_for(broker, t)
    cases = {
        ("nope",): "status: error: unknown job 'nope' (one of alerts, clicks, sessions, top_users)",
        ("clicks", "--timeout", "1"): "status: error: cannot list partitions of topic",
    }
    unreachable = {**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    for args, line in cases.items():
        proc = run_status(unreachable if "--timeout" in args else env, *args)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith(line), proc.stderr
    bad = run_status({**env, "JOIN_MODE": "sideways"}, "clicks")
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        "status: error: invalid configuration: JOIN_MODE: Input should be 'left' or 'inner' (got 'sideways')",
    )
