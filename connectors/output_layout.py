"""Which Bytewax sink partition writes which (topic, Kafka partition), and the
snapshot a sink partition keeps, naming its (topic, partition).

Sink partitions are numbered over every output topic together (joined,
unmatched, dead letters...), so a changed layout (``JOIN_MODE``, a topic
recreated with fewer partitions) gives an old snapshot to another
(topic, partition). A snapshot therefore names its slot, and
:func:`snapshot_offset` refuses one given to another slot.

Why the parts are still named by index (``"000000"``...) and not by
``topic-partition``: Bytewax 0.21.1 routes resume state by part name and
panics ("Key ... is not in this worker's routing map") when the store holds
state for a name no longer listed, so renaming them would break every
existing recovery store. Old stores hold a bare ``int`` offset: it is still
accepted (the launcher's ``layout.json`` check refuses a changed output layout
when the store has that record, see :mod:`clickstream.store_layout`).
"""

from __future__ import annotations

from connectors.kafka_source import topic_partition_counts
from connectors.lineage_readback import RESET_HINT, DeliveryError
from operators.records import OutBatch, OutMessage, slot_for

#: What a sink partition snapshots: ``(topic, partition, offset)``, a plain
#: tuple (pickled into the recovery store: small and stable); ``offset`` is
#: where the next resume reads back from (exclusive), None from the start.
SinkSnapshot = tuple[str, int, int | None]


class SinkStateMismatch(RuntimeError):
    """A sink partition was given the snapshot of another (topic, partition)."""


def snapshot_offset(state: SinkSnapshot | int | None, topic: str, partition: int) -> int | None:
    """The offset in ``state`` for the slot ``topic[partition]``; a bare ``int``
    (stores written before snapshots named their slot) is taken as is."""
    if state is None or isinstance(state, int):
        return state
    state_topic, state_partition, offset = state
    if (state_topic, state_partition) != (topic, partition):
        raise SinkStateMismatch(
            f"the sink partition for {topic}[{partition}] was given the snapshot of "
            f"{state_topic}[{state_partition}] (offset {offset}): the output layout changed "
            f"since the recovery store was written (JOIN_MODE, an output topic's partition "
            f"count); restore it, or {RESET_HINT}"
        )
    return offset


class OutputLayout:
    """Which Bytewax sink partition writes which (topic, Kafka partition).

    Sink partition ``i`` is the i-th (topic, Kafka partition) pair, topics in
    the given order; it is named ``f"{i:06d}"`` (``"000000"``, ``"000001"``...)
    and messages are routed to it under the item key ``str(i)``, which
    ``part_fn`` turns back into ``i`` (Bytewax indexes the *sorted* part
    names: zero-padding keeps that order). Partition counts are read once, lazily.
    """

    def __init__(self, config: dict[str, str], topics: list[str]):
        self._config = dict(config)
        self.topics = list(dict.fromkeys(topics))
        self._counts: dict[str, int] | None = None
        #: topic -> (its first slot, its partition count)
        self._slot_of: dict[str, tuple[int, int]] = {}

    def counts(self) -> dict[str, int]:
        if self._counts is None:
            counts = topic_partition_counts(self._config, self.topics)
            slot_of, base = {}, 0
            for topic in self.topics:
                slot_of[topic] = (base, counts[topic])
                base += counts[topic]
            self._slot_of = slot_of
            self._counts = counts
        return self._counts

    def slots(self) -> list[tuple[str, int]]:
        counts = self.counts()
        return [(t, p) for t in self.topics for p in range(counts[t])]

    def slot_range(self, topic: str) -> tuple[int, int]:
        """``topic``'s slots: (the first one's index, how many)."""
        self.counts()
        where = self._slot_of.get(topic)
        if where is None:
            raise DeliveryError(f"no output slot for topic {topic!r}: not configured")
        return where

    def route_lists(self, lists: list[list[OutMessage]]) -> list[tuple[str, list[OutMessage]]]:
        """Group the messages of several lists by destination slot, one batch
        per slot for all of them (fewer, larger items for Bytewax); the key is
        the slot index as a decimal string (``"7"``, not zero-padded)."""
        self.counts()
        slot_of = self._slot_of
        groups: dict[int, OutBatch] = {}
        for messages in lists:
            for msg in messages:
                slots = slot_of.get(msg.topic) or self.slot_range(msg.topic)  # the latter raises
                slot = slot_for(slots, msg.key, msg.lineage)
                group = groups.get(slot)
                if group is None:
                    groups[slot] = OutBatch((msg,))
                else:
                    group.append(msg)
        return [(str(slot), group) for slot, group in groups.items()]
