"""``ON_INPUT_OFFSET_OUT_OF_RANGE`` piece by piece: the pure decision, the
setting, and the source's partition on the real broker (on resume, while
running across a broker restart, a changed partition count, the metric).
The whole job is in tests/test_input_out_of_range.py."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from clickstream.broker import LocalBroker
from connectors.kafka_source import KafkaBatchSource
from connectors.offset_range import (
    InputOffsetOutOfRange,
    OutOfRangePolicy,
    PartitionCountChanged,
    RangeWatch,
    failure_message,
    resume_offset,
)
from dataflows.settings import CommonSettings, ConfigError, load_settings

FAIL, EARLIEST, LATEST = OutOfRangePolicy.FAIL, OutOfRangePolicy.EARLIEST, OutOfRangePolicy.LATEST


@pytest.mark.parametrize(
    ("offset", "low", "high", "policy", "expected"),
    [
        (5, 0, 10, FAIL, 5),  # inside: kept whatever the policy
        (10, 0, 10, FAIL, 10),  # at the end: the next record to come
        (3, 3, 10, FAIL, 3),  # at the first available record
        (11, 0, 10, FAIL, None),  # past the end
        (11, 0, 10, EARLIEST, 0),
        (11, 0, 10, LATEST, 10),
        (2, 3, 10, FAIL, None),  # before the first available record (deleted)
        (2, 3, 10, EARLIEST, 3),
        (2, 3, 10, LATEST, 10),
        (1500, 0, 0, EARLIEST, 0),  # recreated, still empty
        (-2, 0, 0, FAIL, -2),  # a logical start (beginning) is never out of range
        (1500, -1001, -1001, FAIL, 1500),  # range not known yet: nothing decided
    ],
)
def test_resume_offset_decides_from_the_stored_offset_and_the_range(offset, low, high, policy, expected):
    assert resume_offset(policy, offset, low, high) == expected


def test_an_offset_seen_out_of_range_counts_only_once_it_held():
    watch = RangeWatch(hold_s=2.0)
    assert not watch.confirmed(50, 0, 20, now=100.0)  # first seen
    assert not watch.confirmed(50, 0, 20, now=101.9)
    assert not watch.confirmed(50, 0, 60, now=102.5)  # back in range (a lagging end): restart
    assert not watch.confirmed(50, 0, 20, now=103.0)
    assert not watch.confirmed(50, 0, 20, now=104.9)
    assert watch.confirmed(50, 0, 20, now=105.0)
    assert not watch.confirmed(50, 0, 20, now=105.1)  # acted on: a new hold starts
    assert not watch.confirmed(5, 0, 20, now=200.0)  # inside: never


def test_records_in_between_restart_the_hold():
    """A lagging watermark seen once, then records for a long while: a later
    glitch must hold for the whole time again, not act at once."""
    watch = RangeWatch(hold_s=2.0)
    assert not watch.confirmed(100, 0, 50, now=0.0)
    watch.reset()  # a poll returned records
    assert not watch.confirmed(100, 0, 50, now=60.0)
    assert not watch.confirmed(100, 0, 50, now=61.9)
    assert watch.confirmed(100, 0, 50, now=62.0)


def test_the_failure_line_names_topic_partition_offset_and_range():
    assert failure_message("user_clicks", 2, 1500, 0, 300) == (
        "input offset out of range: topic 'user_clicks' partition 2 stored offset 1500, partition "
        "holds 0..300 (ON_INPUT_OFFSET_OUT_OF_RANGE=fail; set earliest or latest to resume there, "
        "or reset the recovery directory)"
    )


def test_the_setting_defaults_to_fail_and_a_bad_value_names_the_variable():
    base = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    settings, _ = load_settings(CommonSettings, base)
    assert settings.on_input_offset_out_of_range is FAIL
    settings, _ = load_settings(CommonSettings, {**base, "ON_INPUT_OFFSET_OUT_OF_RANGE": "earliest"})
    assert settings.on_input_offset_out_of_range is EARLIEST
    with pytest.raises(ConfigError) as bad:
        load_settings(CommonSettings, {**base, "ON_INPUT_OFFSET_OUT_OF_RANGE": "skip"})
    lines = str(bad.value).splitlines()
    assert lines[0] == "invalid configuration:" and len(lines) == 2
    assert lines[1].startswith("  ON_INPUT_OFFSET_OUT_OF_RANGE: ") and "'skip'" in lines[1]


# --- the source's partition on the real broker -----------------------------------------


def produce_values(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})  # multi-record batches
    for value in values:
        producer.produce(topic, value, partition=0)
    assert producer.flush(30) == 0


def counted(job: str, topic: str, policy: str) -> float:
    labels = {"job": job, "topic": topic, "policy": policy}
    return REGISTRY.get_sample_value("clickstream_input_offset_out_of_range_total", labels) or 0.0


def read_values(part, count: int, timeout_s: float = 60) -> list[tuple[int, bytes]]:
    """(offset, value) of the next ``count`` records the partition emits."""
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {got} read"
        for batch in part.next_batch():
            got += [(r.offset, r.value) for r in batch.records]
        time.sleep(0.01)
    return got


def source(bootstrap: str, topic: str, policy: OutOfRangePolicy, job: str) -> KafkaBatchSource:
    return KafkaBatchSource({"bootstrap.servers": bootstrap}, topic, on_out_of_range=policy, job=job)


@pytest.mark.broker
def test_on_resume_fail_raises_and_earliest_rereads_the_partition(broker, topic_names):
    topic = topic_names("clicks")["clicks"]
    broker.create_topics({topic: 1})
    produce_values(broker.bootstrap_servers, topic, [b"v%d" % n for n in range(30)])
    failing = source(broker.bootstrap_servers, topic, FAIL, "unit").build_part("s", f"0-{topic}", (80, 1))
    try:
        with pytest.raises(InputOffsetOutOfRange) as stopped:
            read_values(failing, 1)
    finally:
        failing.close()
    assert str(stopped.value) == failure_message(topic, 0, 80, 0, 30)
    assert counted("unit", topic, "fail") == 1
    # A store written before the partition count was kept holds the offset alone.
    part = source(broker.bootstrap_servers, topic, EARLIEST, "unit").build_part("s", f"0-{topic}", 80)
    try:
        assert read_values(part, 30) == [(n, b"v%d" % n) for n in range(30)]
        assert part.snapshot() == (30, 1)
    finally:
        part.close()
    assert counted("unit", topic, "earliest") == 1


@pytest.mark.broker
def test_a_changed_partition_count_is_refused_whatever_the_policy(broker, topic_names):
    topic = topic_names("clicks")["clicks"]
    broker.create_topics({topic: 2})
    for policy in OutOfRangePolicy:
        with pytest.raises(PartitionCountChanged, match=f"input topic '{topic}' has 2 partitions but"):
            source(broker.bootstrap_servers, topic, policy, "unit").build_part("s", f"1-{topic}", (5, 3))


@pytest.mark.broker
def test_while_running_a_broker_that_lost_the_topic_is_noticed_and_latest_applied(topic_names):
    """No resume: the partition is reading when the broker restarts empty."""
    topic = topic_names("clicks")["clicks"]
    with LocalBroker.start() as first:
        first.create_topics({topic: 1})
        produce_values(first.bootstrap_servers, topic, [b"old%d" % n for n in range(20)])
        part = source(first.bootstrap_servers, topic, LATEST, "running").build_part("s", f"0-{topic}", None)
        try:
            assert [o for o, _ in read_values(part, 20)] == list(range(20))
            first.stop()
            with LocalBroker.start(port=first.port) as second:
                second.create_topics({topic: 1})
                produce_values(second.bootstrap_servers, topic, [b"gone%d" % n for n in range(5)])
                # Past the new end (5): moved there, so only records produced later are read.
                deadline = time.monotonic() + 60
                while counted("running", topic, "latest") < 1:
                    assert time.monotonic() < deadline, "the out-of-range offset was never noticed"
                    part.next_batch()
                    time.sleep(0.01)
                produce_values(second.bootstrap_servers, topic, [b"new%d" % n for n in range(3)])
                assert read_values(part, 3) == [(5 + n, b"new%d" % n) for n in range(3)]
                assert part.snapshot() == (8, 1)
        finally:
            part.close()
