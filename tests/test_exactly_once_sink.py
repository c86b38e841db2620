"""The exactly-once sink partition across crashes, on the real broker.

Each "execution" builds a sink partition the way Bytewax does on resume (from
the last snapshot), replays what its input would replay, and either snapshots
or is abandoned without one (a kill -9 after its messages were delivered).

The story that the crash test first caught as duplicates: records written
before a crash are produced again by the replay only *after* the next
snapshot. That snapshot must not move past them, or the resume after a second
crash reads back too little and writes them twice.
"""

from __future__ import annotations

import logging

import pytest

from clickstream.read_topic import read_all
from connectors.exactly_once_sink import _ExactlyOncePartition
from operators.records import OutMessage

pytestmark = pytest.mark.broker


def messages(topic: str, *ids: int) -> list:
    return [OutMessage(topic, b"user-%d" % i, b'{"n": %d}' % i, None, b"click/%d" % i) for i in ids]


def crash(part: _ExactlyOncePartition) -> None:
    """Killed after its messages were delivered, before any further snapshot."""
    part._wait_for_tail()  # writes before the read-back ends are buffered, then sent
    assert part._producer.flush(30) == 0


def written(broker, topic: str) -> list:
    return [(r.offset, dict(r.headers)["lineage"]) for r in read_all(broker.bootstrap_servers, topic)]


def test_a_record_replayed_after_the_next_snapshot_survives_a_second_crash(broker, topic_names):
    topic = topic_names("joined")["joined"]
    broker.create_topics({topic: 1})
    config = {"bootstrap.servers": broker.bootstrap_servers}

    # Execution A: clicks 1-3, snapshot, clicks 4-5, killed.
    a = _ExactlyOncePartition(config, topic, 0, None)
    a.write_batch([messages(topic, 1, 2, 3)])
    snapshot_a = a.snapshot()
    a.write_batch([messages(topic, 4, 5)])
    crash(a)
    assert snapshot_a == 2

    # Execution B resumes from A's snapshot: 4 and 5 are already in Kafka. Its
    # replay produces 4, then the new click 6, and snapshots before it gets
    # to 5 again: the snapshot stays before 5 (offset 4), not at 6's offset.
    b = _ExactlyOncePartition(config, topic, 0, snapshot_a)
    b.write_batch([messages(topic, 4, 6)])
    snapshot_b = b.snapshot()
    assert snapshot_b == 3
    b.write_batch([messages(topic, 5, 7)])  # 5 skipped, 7 written
    crash(b)

    # Execution C resumes from B's snapshot and replays 5, 6, 7, then 8.
    c = _ExactlyOncePartition(config, topic, 0, snapshot_b)
    c.write_batch([messages(topic, 5, 6, 7, 8)])
    assert c.snapshot() == 7  # nothing pending: the last delivered offset
    assert (c.skipped, c.written) == (3, 1)
    c.close()

    assert written(broker, topic) == [
        (0, b"click/1"), (1, b"click/2"), (2, b"click/3"), (3, b"click/4"),
        (4, b"click/5"), (5, b"click/6"), (6, b"click/7"), (7, b"click/8"),
    ]  # fmt: skip


def test_records_never_produced_again_stop_pinning_after_the_horizon(broker, topic_names, caplog):
    """A record the replay resolves elsewhere (e.g. now joined instead of
    unmatched) would pin the snapshot forever; after `pin_horizon_s` the
    snapshot moves on (with a warning) while this run still skips it."""
    topic = topic_names("unmatched")["unmatched"]
    broker.create_topics({topic: 1})
    config = {"bootstrap.servers": broker.bootstrap_servers}
    a = _ExactlyOncePartition(config, topic, 0, None)
    a.write_batch([messages(topic, 1, 2)])
    crash(a)

    b = _ExactlyOncePartition(config, topic, 0, None)
    b.write_batch([messages(topic, 3)])
    assert b.snapshot() == -1  # 1 and 2 pending: read back from the start
    b.pin_horizon_s = 0.0
    with caplog.at_level(logging.WARNING, logger="connectors.exactly_once_sink"):
        assert b.snapshot() == 2
    assert f"{topic}[0]: 2 record(s) written before the last restart were not produced again" in caplog.text
    b.write_batch([messages(topic, 2)])  # produced late after all: still skipped in this run
    b.close()
    assert written(broker, topic) == [(0, b"click/1"), (1, b"click/2"), (2, b"click/3")]
