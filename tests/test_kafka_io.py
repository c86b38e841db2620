"""connectors.kafka_io on the real broker: topic lookups that never create
topics, reads to the confirmed end, produce with back-pressure and delivery
errors; plus the tools' table printer."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer

from clickstream.tooling import table
from connectors.kafka_io import (
    END_HOLD_S,
    PRODUCER_DEFAULTS,
    DeliveryFailed,
    ReadTimeout,
    TopicNotFound,
    missing_topics,
    produce_all,
    produce_with_backpressure,
    read_to_end,
    reader_config,
    require_topics,
)
from connectors.kafka_source import KafkaSourceError, list_topic_partitions


def test_reader_config_defaults_and_overrides():
    config = reader_config(
        {"bootstrap.servers": "h:1", "enable.partition.eof": "false", "fetch.wait.max.ms": "50"}
    )
    assert config["bootstrap.servers"] == "h:1"
    assert config["enable.partition.eof"] == "true"  # read_to_end needs it
    assert config["fetch.wait.max.ms"] == "50"  # the caller's config wins over defaults
    assert config["allow.auto.create.topics"] == "false"
    assert config["group.id"].startswith("clickstream-reader-")
    tailing = reader_config("h:1", **{"enable.partition.eof": "false", "group.id": "g"})
    assert (tailing["enable.partition.eof"], tailing["group.id"]) == ("false", "g")
    assert "enable.idempotence" in PRODUCER_DEFAULTS and END_HOLD_S > 0


def test_table_aligns_columns_and_strips_trailing_spaces():
    assert table([("a", 1), ("long", 1000)], ["name", "n"], align="lr") == [
        "name     n",
        "----  ----",
        "a        1",
        "long  1000",
    ]
    assert table([("x", "y", 3), ("xyz", "y", 10)], indent="  ") == ["  x    y  3", "  xyz  y  10"]
    assert table([]) == []


@pytest.mark.broker
def test_topic_lookups_never_create_topics(broker, topic_names):
    names = topic_names("present", "absent", "absent2")
    broker.create_topics({names["present"]: 3})
    bootstrap = broker.bootstrap_servers

    assert require_topics(bootstrap, [names["present"]]) == {names["present"]: 3}
    with pytest.raises(TopicNotFound) as info:
        require_topics({"bootstrap.servers": bootstrap}, [names["present"], names["absent"]])
    assert info.value.topics == [names["absent"]]
    assert str(info.value) == f"topic {names['absent']!r} does not exist"
    assert missing_topics(bootstrap, [names["absent2"], names["present"], names["absent"]]) == sorted(
        [names["absent"], names["absent2"]]
    )
    with pytest.raises(
        KafkaSourceError,
        match=rf"topic {names['absent']!r} is not usable at .*: it does not exist \(create it first\)",
    ):
        list_topic_partitions({"bootstrap.servers": bootstrap}, names["absent"])
    reader = Consumer(reader_config(bootstrap))
    try:
        with pytest.raises(TopicNotFound):
            require_topics(reader, [names["absent"]])
    finally:
        reader.close()
    # A default-configured admin client would have created them (4 partitions).
    existing = broker.topic_partitions()
    assert names["absent"] not in existing and names["absent2"] not in existing


@pytest.mark.broker
def test_read_to_end_reads_every_record_and_what_arrives_before_the_end_holds(broker, topic_names):
    topic = topic_names("data")["data"]
    broker.create_topics({topic: 3})
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 50})
    for i in range(250):  # one multi-record batch: the case the high watermark gets wrong
        producer.produce(topic, b"v%d" % i, partition=0)
    producer.produce(topic, b"p1", partition=1)
    assert producer.flush(10) == 0

    consumer = Consumer(reader_config(broker.bootstrap_servers))
    seen = []
    try:
        for batch in read_to_end(consumer, topic, range(3), batch_size=100):
            if not seen:  # more records while reading: they are part of the end
                for i in range(10):
                    producer.produce(topic, b"late%d" % i, partition=2)
                assert producer.flush(10) == 0
            seen += [(m.partition(), m.offset(), m.value()) for m in batch]
    finally:
        consumer.close()
    assert sorted(seen) == sorted(
        [(0, i, b"v%d" % i) for i in range(250)]
        + [(1, 0, b"p1")]
        + [(2, i, b"late%d" % i) for i in range(10)]
    )

    # From an offset, one partition; an end that cannot be confirmed in time.
    consumer = Consumer(reader_config(broker.bootstrap_servers))
    try:
        tail = [m.offset() for b in read_to_end(consumer, topic, [0], start=245) for m in b]
        assert tail == [245, 246, 247, 248, 249]
        with pytest.raises(ReadTimeout, match=f"topic {topic!r}"):
            list(read_to_end(consumer, topic, [1], timeout_s=0.3, end_hold_s=5.0))
    finally:
        consumer.close()


@pytest.mark.broker
def test_produce_with_backpressure_waits_for_room(broker, topic_names):
    topic = topic_names("bp")["bp"]
    broker.create_topics({topic: 1})
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "queue.buffering.max.messages": 5, "linger.ms": 20}
    )
    waits = []
    for i in range(200):
        produce_with_backpressure(producer, topic, b"v%d" % i, b"k", on_wait=lambda: waits.append(1))
    assert producer.flush(10) == 0
    assert waits, "the local queue of 5 never filled up"
    consumer = Consumer(reader_config(broker.bootstrap_servers))
    try:
        values = [m.value() for b in read_to_end(consumer, topic, [0]) for m in b]
    finally:
        consumer.close()
    assert values == [b"v%d" % i for i in range(200)]


@pytest.mark.broker
def test_produce_all_counts_deliveries_and_raises_delivery_errors(broker, topic_names):
    topic = topic_names("all")["all"]
    broker.create_topics({topic: 1})
    producer = Producer(
        {
            **PRODUCER_DEFAULTS,
            "bootstrap.servers": broker.bootstrap_servers,
            "queue.buffering.max.messages": 10,
        }
    )
    reports = produce_all(producer, ((topic, {"value": b"%d" % i, "key": b"k"}) for i in range(100)))
    assert (reports.delivered, reports.failed) == (100, 0)

    # A topic that does not exist (and is not created): a failed delivery report.
    missing = topic_names("missing")["missing"]
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "allow.auto.create.topics": "false",
            "message.timeout.ms": 500,
        }
    )
    bad = [(topic, {"value": b"ok"}), (missing, {"value": b"lost"})]
    with pytest.raises(DeliveryFailed, match=rf"1 message\(s\) not delivered; first: {missing}"):
        produce_all(producer, bad)
    reports = produce_all(producer, bad, check=False)
    assert (reports.delivered, reports.failed) == (1, 1)
