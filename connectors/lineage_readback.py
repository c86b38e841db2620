"""Read back what the exactly-once sink already wrote to one Kafka partition.

On resume a sink partition reads its Kafka partition from just after its
snapshot's offset to the end and collects the records' lineage ids (header
``lineage``), so the replay does not write them twice
(:func:`read_lineage_tail`). Before that, :func:`check_resume_offset` makes
sure the snapshot's offset is still in the partition: if the topic was
recreated or truncated, the read-back could never finish (the local broker
answers a fetch beyond the end with silence, Kafka with "offset out of
range"), so it fails at once with :class:`DeliveryError` naming the topic,
the partition, the stored offset and the partition's real end.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from connectors.client_logs import with_client_logs
from connectors.kafka_io import KafkaIOError, ReadTimeout, read_to_end, reader_config

LINEAGE_HEADER = "lineage"

#: How long a fetch at the stored offset may stay silent before the partition's
#: real end is measured by reading it (a slow broker only costs that read).
PROBE_S = 2.0

RESET_HINT = "reset the recovery store (stop the job, delete or move RECOVERY_DIR)"


class DeliveryError(RuntimeError):
    """The broker did not accept messages, or the sink cannot resume; the dataflow must stop."""


def _stored_record_answers(
    config: dict[str, str], topic: str, partition: int, offset: int, probe_s: float
) -> bool:
    """Whether a fetch at ``offset`` returns a record at once (True), or
    reports the end or out of range, or stays silent for ``probe_s`` (False)."""
    consumer = Consumer(with_client_logs(reader_config(config, **{"auto.offset.reset": "error"})))
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + probe_s
        while (remaining := deadline - time.monotonic()) > 0:
            for msg in consumer.consume(100, min(0.1, remaining)):
                err = msg.error()
                if err is None:
                    return True  # the stored record (or, after compaction, a later one)
                if err.code() == KafkaError._PARTITION_EOF:
                    end = msg.offset()  # the end as the broker reports it
                    return end is not None and end > offset
                if err.fatal() or err.code() in (
                    KafkaError._AUTO_OFFSET_RESET,
                    KafkaError.OFFSET_OUT_OF_RANGE,
                ):
                    return False
        return False
    finally:
        consumer.close()


def partition_end(config: dict[str, str], topic: str, partition: int, timeout_s: float) -> int | None:
    """The offset after the last record of a partition, read to its confirmed
    end (the local broker's high watermark is wrong); None if it is empty."""
    consumer = Consumer(with_client_logs(reader_config(config)))
    last: int | None = None
    try:
        for batch in read_to_end(consumer, topic, [partition], timeout_s=timeout_s):
            last = batch[-1].offset()
    except (ReadTimeout, KafkaIOError) as exc:
        raise DeliveryError(f"could not read {topic}[{partition}] to its end: {exc}") from exc
    finally:
        consumer.close()
    return None if last is None else last + 1


def check_resume_offset(
    config: dict[str, str],
    topic: str,
    partition: int,
    stored: int,
    timeout_s: float = 120.0,
    probe_s: float = PROBE_S,
) -> None:
    """Raise :class:`DeliveryError` at once if record ``stored`` (the last one
    a snapshot saw delivered) is beyond the partition's end."""
    if _stored_record_answers(config, topic, partition, stored, probe_s):
        return
    end = partition_end(config, topic, partition, timeout_s)
    if end is not None and end > stored:
        return  # a slow broker, or records deleted by retention: the read-back starts at the log start
    where = "is empty" if end is None else f"ends at offset {end}"
    raise DeliveryError(
        f"cannot resume writing {topic}[{partition}]: the recovery snapshot says offset {stored} "
        f"was delivered there, but the partition {where} (the topic was recreated or truncated "
        f"since); {RESET_HINT}"
    )


def read_lineage_tail(
    config: dict[str, str], topic: str, partition: int, start: int, timeout_s: float = 120.0
) -> tuple[dict[bytes, int], int | None]:
    """The lineage ids of the records of one partition from ``start`` to its
    confirmed end, each with the offset of its first record, and the highest
    offset seen (None if the tail is empty). Fails fast (see
    :func:`check_resume_offset`) if record ``start - 1`` is beyond the end."""
    if start > 0:
        check_resume_offset(config, topic, partition, start - 1, timeout_s)
    consumer = Consumer(
        with_client_logs(reader_config(config, **{"group.id": "clickstream-exactly-once-tail"}))
    )
    seen: dict[bytes, int] = {}
    last: int | None = None
    try:
        for batch in read_to_end(consumer, topic, [partition], start=start, timeout_s=timeout_s):
            for msg in batch:
                last = msg.offset()
                # The sink appends its header last; an earlier `lineage` header
                # is the input's own (dead letters keep the original headers).
                lineage = None
                for name, value in msg.headers() or ():
                    if name == LINEAGE_HEADER:
                        lineage = value
                if lineage is not None and lineage not in seen:
                    seen[lineage] = last
    except (ReadTimeout, KafkaIOError) as exc:
        raise DeliveryError(f"could not read back {topic}[{partition}] from {start}: {exc}") from exc
    finally:
        consumer.close()
    return seen, last
