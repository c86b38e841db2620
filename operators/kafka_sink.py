"""A Kafka sink for lists of :class:`OutMessage`, that never ignores a failed delivery.

Bytewax's own ``KafkaSink`` takes one message per item and has no delivery
callback: a record the broker rejects is lost silently. This sink:

* takes lists of messages (one item per upstream batch), each message naming
  its topic;
* asks librdkafka to report failed deliveries only
  (``delivery.report.only.error``), so success costs no Python call;
* flushes at the end of every ``write_batch`` and raises
  :class:`DeliveryError` if any message of it failed, stopping the dataflow
  loudly instead of losing data: with recovery enabled, the restart replays
  from the last snapshot;
* counts what it wrote per topic and logs the totals when it closes.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Dict, List

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaException, Producer

from operators.records import OutMessage

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """The broker did not accept messages; the dataflow must stop (and replay)."""


class _SinkPartition(StatelessSinkPartition[List[OutMessage]]):
    def __init__(self, config: Dict[str, str], worker_index: int, flush_timeout_s: float):
        producer_config = {
            "linger.ms": "5",
            "batch.num.messages": "10000",
            "compression.type": "none",
            "enable.idempotence": "true",
            "delivery.report.only.error": True,
        }
        producer_config.update(config)
        producer_config["on_delivery"] = self._on_delivery
        self._producer = Producer(producer_config)
        self._failures: List[str] = []
        self._worker = worker_index
        self._flush_timeout_s = flush_timeout_s
        self.written: Counter = Counter()

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self._failures.append(
                f"{msg.topic()}[{msg.partition()}] key={msg.key()!r}: {err.str()}"
            )

    def write_batch(self, items: List[List[OutMessage]]) -> None:
        produce = self._producer.produce
        written = self.written
        for messages in items:
            for msg in messages:
                try:
                    produce(msg.topic, msg.value, msg.key, headers=msg.headers)
                except BufferError:
                    # Local queue full: let librdkafka send, then retry once.
                    self._producer.poll(0.5)
                    produce(msg.topic, msg.value, msg.key, headers=msg.headers)
                except KafkaException as exc:
                    raise DeliveryError(
                        f"cannot produce to {msg.topic!r} (key={msg.key!r}): {exc}"
                    ) from exc
                written[msg.topic] += 1
        remaining = self._producer.flush(self._flush_timeout_s)
        if remaining:
            raise DeliveryError(
                f"{remaining} message(s) not delivered within {self._flush_timeout_s}s"
            )
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryError(
                f"{len(failures)} message(s) rejected by the broker; first: {failures[0]}"
            )

    def close(self) -> None:
        self._producer.flush(self._flush_timeout_s)
        if self.written:
            log.info(
                "worker %d wrote %s",
                self._worker,
                ", ".join(f"{n} to {t}" for t, n in sorted(self.written.items())),
            )


class KafkaOutSink(DynamicSink[List[OutMessage]]):
    """Write lists of :class:`OutMessage` to Kafka; every worker writes its own."""

    def __init__(self, config: Dict[str, str], flush_timeout_s: float = 60.0):
        """:arg config: librdkafka properties (``bootstrap.servers`` and any other)."""
        self._config = dict(config)
        self._flush_timeout_s = flush_timeout_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SinkPartition:
        return _SinkPartition(self._config, worker_index, self._flush_timeout_s)
