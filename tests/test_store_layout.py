"""A changed job on an old recovery store stops at once, naming what changed,
instead of mixing states or applying an offset to another partition."""

from __future__ import annotations

import subprocess

import orjson
import pytest
from confluent_kafka import Producer

from clickstream.store_layout import LayoutChanged, check_layout, differences
from conftest import ROOT, clicks_job_env, job_command

STORED = {
    "job": "clicks",
    "state_shards": 16,
    "join_mode": "left",
    "topics": {"joined_topic": ["j", 2], "unmatched_topic": ["u", None]},
}


def test_differences_name_each_changed_setting_and_topic():
    now = {**STORED, "state_shards": 4, "topics": {"joined_topic": ["j", 1], "unmatched_topic": ["u", 1]}}
    # a topic the store's job did not use (no partition count then) is not a change
    assert differences(STORED, now) == [
        "STATE_SHARDS: 16 -> 4",
        "JOINED_TOPIC (topic, partitions): ['j', 2] -> ['j', 1]",
    ]
    assert differences(STORED, dict(STORED)) == []


def test_a_store_without_a_layout_gets_one_and_a_different_one_is_refused(tmp_path):
    assert check_layout(tmp_path, STORED) is True
    assert check_layout(tmp_path, STORED) is False
    with pytest.raises(LayoutChanged) as err:
        check_layout(tmp_path, {**STORED, "join_mode": "inner"})
    assert "JOIN_MODE: left -> inner" in str(err.value)
    assert "start over from a fresh store (delete or move RECOVERY_DIR" in str(err.value)


@pytest.mark.broker
def test_the_launcher_refuses_a_store_written_with_other_settings(broker, topic_names, tmp_path):
    t = topic_names("clicks", "profiles", "joined", "joined1", "unmatched", "dlq")
    broker.create_topics(
        {t["clicks"]: 2, t["profiles"]: 1, t["joined"]: 2, t["joined1"]: 1, t["unmatched"]: 1, t["dlq"]: 1}
    )
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    producer.produce(t["clicks"], orjson.dumps({"user_id": "u1", "ts": 1_767_225_600_000}))
    assert producer.flush(30) == 0
    env = clicks_job_env(broker, t, RECOVERY_DIR=str(tmp_path / "store"))

    def launch(**changes: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            job_command("clicks"),
            env={**env, **changes},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )

    first = launch()
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "store" / "layout.json").exists()
    assert launch().returncode == 0  # same settings: resumes

    for changes, line in [
        ({"STATE_SHARDS": "4"}, "STATE_SHARDS: 16 -> 4"),
        ({"JOIN_MODE": "inner"}, "JOIN_MODE: left -> inner"),
        (
            {"JOINED_TOPIC": t["joined1"]},
            f"JOINED_TOPIC (topic, partitions): ['{t['joined']}', 2] -> ['{t['joined1']}', 1]",
        ),
        ({"CLICKS_KEY": "uid"}, "CLICKS_MAPPING: "),
    ]:
        refused = launch(**changes)
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert line in refused.stderr
        assert "was written with other settings" in refused.stderr
        assert "exec " not in refused.stderr  # stopped before the job started
