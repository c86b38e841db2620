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
import time

import pytest

from clickstream.read_topic import read_all
from connectors.exactly_once_sink import (
    DeliveryError,
    ExactlyOnceKafkaSink,
    OutputLayout,
    SinkStateMismatch,
    _ExactlyOncePartition,
)
from connectors.lineage_readback import check_resume_offset
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
    assert snapshot_a == (topic, 0, 2)

    # Execution B resumes from A's snapshot: 4 and 5 are already in Kafka. Its
    # replay produces 4, then the new click 6, and snapshots before it gets
    # to 5 again: the snapshot stays before 5 (offset 4), not at 6's offset.
    b = _ExactlyOncePartition(config, topic, 0, snapshot_a)
    b.write_batch([messages(topic, 4, 6)])
    snapshot_b = b.snapshot()
    assert snapshot_b == (topic, 0, 3)
    b.write_batch([messages(topic, 5, 7)])  # 5 skipped, 7 written
    crash(b)

    # Execution C resumes from B's snapshot and replays 5, 6, 7, then 8.
    c = _ExactlyOncePartition(config, topic, 0, snapshot_b)
    c.write_batch([messages(topic, 5, 6, 7, 8)])
    assert c.snapshot() == (topic, 0, 7)  # nothing pending: the last delivered offset
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
    assert b.snapshot() == (topic, 0, -1)  # 1 and 2 pending: read back from the start
    b.pin_horizon_s = 0.0
    with caplog.at_level(logging.WARNING, logger="connectors.exactly_once_sink"):
        assert b.snapshot() == (topic, 0, 2)
    assert f"{topic}[0]: 2 record(s) written before the last restart were not produced again" in caplog.text
    b.write_batch([messages(topic, 2)])  # produced late after all: still skipped in this run
    b.close()
    assert written(broker, topic) == [(0, b"click/1"), (1, b"click/2"), (2, b"click/3")]


def test_a_snapshot_of_another_topic_is_refused_at_once(broker, topic_names):
    """The probe: a layout change gave a dead-letters offset to an unmatched
    partition. A snapshot names its (topic, partition): refused, naming both."""
    t = topic_names("unmatched", "dead_letters")
    broker.create_topics({t["unmatched"]: 3, t["dead_letters"]: 1})
    config = {"bootstrap.servers": broker.bootstrap_servers}
    sink = ExactlyOnceKafkaSink(config, OutputLayout(config, [t["unmatched"], t["dead_letters"]]))
    assert sink.list_parts() == ["000000", "000001", "000002", "000003"]
    with pytest.raises(SinkStateMismatch) as refused:
        sink.build_part("write", "000002", (t["dead_letters"], 0, 705))
    assert str(refused.value).startswith(
        f"the sink partition for {t['unmatched']}[2] was given the snapshot of {t['dead_letters']}[0] (offset 705)"
    )
    assert "RECOVERY_DIR" in str(refused.value)


def test_an_old_bare_int_snapshot_still_resumes(broker, topic_names):
    topic = topic_names("joined")["joined"]
    broker.create_topics({topic: 1})
    config = {"bootstrap.servers": broker.bootstrap_servers}
    sink = ExactlyOnceKafkaSink(config, OutputLayout(config, [topic]))
    a = sink.build_part("write", "000000", None)
    a.write_batch([messages(topic, 1, 2, 3)])
    assert a.snapshot() == (topic, 0, 2)
    a.write_batch([messages(topic, 4, 5)])
    crash(a)

    b = sink.build_part("write", "000000", 2)  # as stores written before snapshots named their slot
    b.write_batch([messages(topic, 4, 5, 6)])
    assert b.snapshot() == (topic, 0, 5)
    assert (b.skipped, b.written) == (2, 1)
    b.close()
    c = sink.build_part("write", "000000", (topic, 0, 5))  # the stored record is the last one
    assert c.snapshot() == (topic, 0, 5)
    c.close()
    assert [lineage for _, lineage in written(broker, topic)] == [b"click/%d" % i for i in range(1, 7)]


@pytest.mark.parametrize("refill", [0, 2])
def test_a_snapshot_beyond_a_recreated_topic_fails_fast_naming_it(broker, topic_names, refill):
    topic = topic_names("unmatched")["unmatched"]
    broker.create_topics({topic: 1})
    config = {"bootstrap.servers": broker.bootstrap_servers}
    a = _ExactlyOncePartition(config, topic, 0, None)
    a.write_batch([messages(topic, *range(6))])
    snapshot = a.snapshot()
    a.close()
    assert snapshot == (topic, 0, 5)

    broker.delete_topics([topic])
    broker.create_topics({topic: 1})
    if refill:  # one multi-record batch: the local broker's high watermark is wrong for it
        fresh = _ExactlyOncePartition(config, topic, 0, None)
        fresh.write_batch([messages(topic, *range(100, 100 + refill))])
        fresh.close()

    started = time.monotonic()
    resumed = _ExactlyOncePartition(config, topic, 0, snapshot)
    with pytest.raises(DeliveryError) as failed:
        resumed.snapshot()  # waits for the read-back, which failed
    elapsed = time.monotonic() - started
    resumed.close()
    end = f"ends at offset {refill}" if refill else "is empty"
    assert str(failed.value).startswith(
        f"cannot resume writing {topic}[0]: the recovery snapshot says offset 5 was delivered "
        f"there, but the partition {end} (the topic was recreated or truncated since)"
    )
    assert "RECOVERY_DIR" in str(failed.value)
    print(f"recreated topic, {refill} record(s): failed after {elapsed:.2f} s")
    assert elapsed < 60  # the read-back timeout it used to wait for is 120 s


def test_beyond_the_end_is_decided_by_reading_not_by_the_watermark(broker, topic_names):
    """With no answer in the probe time (probe_s=0: as a slow broker), the
    partition's end is read: records present pass, a missing one fails."""
    topic = topic_names("joined")["joined"]
    broker.create_topics({topic: 1})
    config = {"bootstrap.servers": broker.bootstrap_servers}
    part = _ExactlyOncePartition(config, topic, 0, None)
    part.write_batch([messages(topic, *range(6))])  # one batch: the high watermark says 1
    part.close()
    for stored in (0, 4, 5):
        check_resume_offset(config, topic, 0, stored, probe_s=0)
        check_resume_offset(config, topic, 0, stored)
    for probe_s in (0, 2.0):
        with pytest.raises(DeliveryError, match=rf"{topic}\[0\]: .* offset 6 .* ends at offset 6 "):
            check_resume_offset(config, topic, 0, 6, probe_s=probe_s)
