"""What the source does when a stored input offset is no longer inside its
partition (``ON_INPUT_OFFSET_OUT_OF_RANGE``), and when the topic's partition
count differs from the one the snapshot was taken with.

Such an offset means the input vanished or moved under the recovery store: the
topic was deleted and recreated (or the broker lost its data), or retention
deleted records the job had not read yet. Waiting at an offset past the end
would process nothing, silently, until the new log happened to grow past it;
so the source checks and applies one explicit policy, logged and counted.

The range comes from the consumer's *fetch* responses (librdkafka's cached
watermarks), not from ListOffsets: Tansu's ListOffsets high watermark
under-reports for multi-record batches, while its fetch responses carry the
right one; on a real Kafka cluster both are right, and an out-of-range fetch
also surfaces as ``KafkaError._AUTO_OFFSET_RESET`` (``auto.offset.reset=error``),
which is acted on at once. A range seen from watermarks must hold for
:data:`OUT_OF_RANGE_HOLD_S` first (:class:`RangeWatch`): a newly elected Kafka
leader's high watermark can briefly lag what the old one served, and Tansu's
end events were seen to run ahead of its data under load.
"""

from __future__ import annotations

from enum import Enum


class OutOfRangePolicy(str, Enum):
    """``ON_INPUT_OFFSET_OUT_OF_RANGE``: a stored input offset outside its partition."""

    #: Default. Stop the job with one line naming topic, partition, offset and range.
    FAIL = "fail"
    #: Resume from the partition's first available offset (reprocess what it holds).
    EARLIEST = "earliest"
    #: Resume from the partition's end (skip what it holds).
    LATEST = "latest"


#: How long an offset must stay outside the range the fetch responses report
#: (while no record arrives) before the policy applies.
OUT_OF_RANGE_HOLD_S = 2.0


class RangeWatch:
    """Decides when an offset seen outside its partition's range has stayed
    there long enough (:data:`OUT_OF_RANGE_HOLD_S`) to act on."""

    def __init__(self, hold_s: float = OUT_OF_RANGE_HOLD_S):
        self.hold_s = hold_s
        self._since: float | None = None

    def confirmed(self, offset: int, low: int, high: int, now: float) -> bool:
        """Whether ``offset`` is outside ``low..high`` and has been since ``now - hold_s``."""
        if not out_of_range(offset, low, high):
            self._since = None
            return False
        if self._since is None:
            self._since = now
        if now - self._since < self.hold_s:
            return False
        self._since = None
        return True

    def reset(self) -> None:
        """Records arrived: whatever was seen before no longer holds."""
        self._since = None


class InputOffsetOutOfRange(RuntimeError):
    """A stored input offset is outside its partition and the policy is ``fail``."""


class PartitionCountChanged(RuntimeError):
    """The input topic has another partition count than the snapshot was taken with."""


def out_of_range(offset: int, low: int, high: int) -> bool:
    """Whether ``offset`` (the next one to read) lies outside ``low..high``
    (first available offset .. end offset). A negative ``offset`` is a logical
    start (beginning/end) and an unknown bound (negative) is never crossed."""
    if offset < 0:
        return False
    return (high >= 0 and offset > high) or (low > 0 and offset < low)


def resume_offset(policy: OutOfRangePolicy, offset: int, low: int, high: int) -> int | None:
    """Where to read next: ``offset`` when it is inside ``low..high``, else the
    partition's first (``earliest``) or end (``latest``) offset; ``None`` means
    stop (``fail``)."""
    if not out_of_range(offset, low, high):
        return offset
    if policy is OutOfRangePolicy.EARLIEST:
        return max(low, 0)
    if policy is OutOfRangePolicy.LATEST:
        return high
    return None


def describe(topic: str, partition: int, offset: int, low: int, high: int) -> str:
    """The common part of the out-of-range log and error lines."""
    return (
        f"input offset out of range: topic {topic!r} partition {partition} "
        f"stored offset {offset}, partition holds {max(low, 0)}..{high}"
    )


def failure_message(topic: str, partition: int, offset: int, low: int, high: int) -> str:
    return (
        f"{describe(topic, partition, offset, low, high)} (ON_INPUT_OFFSET_OUT_OF_RANGE=fail; "
        "set earliest or latest to resume there, or reset the recovery directory)"
    )


def count_changed_message(topic: str, stored: int, now: int) -> str:
    """A changed partition count is never resolved by the policy: records moved
    between partitions, so no offset of the old layout means anything in the new one."""
    return (
        f"input topic {topic!r} has {now} partitions but the recovery store was written "
        f"with {stored}: its offsets do not apply (ON_INPUT_OFFSET_OUT_OF_RANGE does not "
        "cover this); reset the recovery directory to start over"
    )
