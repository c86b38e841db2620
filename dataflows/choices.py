"""The settings' value types: every choice a variable offers, and the checks
of a key path and a time path (``CLICKS_KEY``, ``PROFILES_TIME``...)."""

from __future__ import annotations

from enum import Enum

# ON_INPUT_OFFSET_OUT_OF_RANGE: defined where the source applies it.
from connectors.offset_range import OutOfRangePolicy as OutOfRangePolicy
from operators.event_parsing import TIME_FORMATS
from operators.record_mapping import MESSAGE_KEY, MESSAGE_TIMESTAMP, split_path


class JoinMode(str, Enum):
    """What happens to a click that finds no profile."""

    #: Emitted to JOINED_TOPIC with ``"profile": null``.
    LEFT = "left"
    #: Emitted to UNMATCHED_TOPIC instead.
    INNER = "inner"


class JoinStrategy(str, Enum):
    """Which implementation joins clicks with profiles."""

    #: Default. Event-time as-of join on a custom stateful operator:
    #: the profile version valid at the click's event time, TTL, bounded wait.
    ASOF = "asof"
    #: Bytewax ``join_window``: clicks and profiles meet in the same
    #: event-time tumbling window.
    WINDOW = "window"
    #: Bytewax ``join`` in running mode: the latest profile seen so far,
    #: in processing order.
    RUNNING = "running"
    #: Every profile version within [click - before, click + after]: one
    #: record per pair (custom stateful operator).
    INTERVAL = "interval"


# Built from TIME_FORMATS so the two never drift; mypy cannot read a computed member dict.
TimeFormat = Enum("TimeFormat", {f.upper(): f for f in TIME_FORMATS}, type=str)  # type: ignore[misc]


class TimeFallback(str, Enum):
    """What to do when a record has no time field."""

    #: Use the Kafka message timestamp.
    TIMESTAMP = "timestamp"
    #: Dead-letter the record (``invalid_time``).
    NONE = "none"


class IsoWithoutOffset(str, Enum):
    """ISO-8601 times without a UTC offset."""

    REJECT = "reject"
    UTC = "utc"


class OutputShape(str, Enum):
    """The join output record."""

    #: ``{"user_id", "click": {...}, "profile": {...}, ...}``.
    NESTED = "nested"
    #: The click's fields, the profile's fields prefixed, lineage under ``_join``.
    FLAT = "flat"


class FlatCollision(str, Enum):
    """Flat output: a prefixed profile field (or ``_join``) named like a click field."""

    KEEP_CLICK = "keep_click"
    KEEP_PROFILE = "keep_profile"
    DEAD_LETTER = "dead_letter"


def _key_path(value: str) -> str:
    value = value.strip()
    if value == MESSAGE_TIMESTAMP:
        raise ValueError("@timestamp is a time, not a key (use a field path or @key)")
    if value != MESSAGE_KEY:
        if value.startswith("@"):
            raise ValueError(f"{value!r}: the only message part a key can be is @key")
        split_path(value)
    return value


def _time_path(value: str) -> str:
    value = value.strip()
    if value == MESSAGE_KEY:
        raise ValueError("@key is a key, not a time (use a field path or @timestamp)")
    if value != MESSAGE_TIMESTAMP:
        if value.startswith("@"):
            raise ValueError(f"{value!r}: the only message part a time can be is @timestamp")
        split_path(value)
    return value
