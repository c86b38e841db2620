"""Event-time values: the formats a record's time may be declared in, the
plausibility rules, and the dead-letter reasons of decoding.

A time value is turned into epoch milliseconds by its declared format
(``*_TIME_FORMAT``):

=============  ==============================================================
``auto``       an integer is epoch milliseconds, a string is ISO-8601
``epoch_ms``   an integer of epoch milliseconds
``epoch_s``    an integer or fractional number of epoch seconds, rounded to
               the nearest millisecond
``epoch_us``   an integer of epoch microseconds (floored to the millisecond)
``epoch_ns``   an integer of epoch nanoseconds (floored to the millisecond)
``iso8601``    an ISO-8601 string with a UTC offset (or ``Z``); without an
               offset it is refused, or read as UTC with
               ``ISO_WITHOUT_OFFSET=utc``
=============  ==============================================================

Each explicit format accepts only its own form. An event time is plausible
from ``EVENT_TIME_MIN`` (default 10^12 ms, 2001-09-09) up to 24 h after the
processing time; outside, the record is dead-lettered with ``invalid_time``
and, when the number would be plausible in another unit, a detail that names
it (``looks like epoch seconds: set CLICKS_TIME_FORMAT=epoch_s``): a wrong
unit is refused, never silently mis-windowed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

#: How far ahead of the processing wall clock an event time may be.
MAX_FUTURE_SKEW_MS = 24 * 3600 * 1000
#: Default earliest plausible event time: 10^12 ms = 2001-09-09T01:46:40Z.
DEFAULT_EVENT_TIME_MIN_MS = 10**12

INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_USER_ID = "missing_user_id"
INVALID_USER_ID = "invalid_user_id"
INVALID_TIME = "invalid_time"
EMPTY_VALUE = "empty_value"
TOO_LARGE = "too_large"
#: Flat join output only: a profile field's output name equals a click field.
FIELD_COLLISION = "field_collision"

#: Every reason a record can be dead-lettered for at decoding.
DECODE_REASONS = (
    INVALID_JSON,
    NOT_AN_OBJECT,
    MISSING_USER_ID,
    INVALID_USER_ID,
    INVALID_TIME,
    EMPTY_VALUE,
    TOO_LARGE,
)

TIME_FORMATS = ("auto", "epoch_ms", "epoch_s", "epoch_us", "epoch_ns", "iso8601")
#: Units a plain number may be in, with their factor to milliseconds.
_UNITS = (
    ("epoch_s", "epoch seconds", 1000.0),
    ("epoch_ms", "epoch milliseconds", 1.0),
    ("epoch_us", "epoch microseconds", 1e-3),
    ("epoch_ns", "epoch nanoseconds", 1e-6),
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class Reject(Exception):
    """A record is unusable: ``reason`` (a DLQ reason code) and a readable detail."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        self.detail = detail


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def parse_iso(value: str, field: str, assume_utc: bool = False) -> int:
    """Epoch ms of an ISO-8601 string; one without an offset is refused unless
    ``assume_utc``."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Reject(INVALID_TIME, f"{field} {value[:64]!r} is not ISO-8601") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        if not assume_utc:
            raise Reject(
                INVALID_TIME,
                f"{field} {value[:64]!r} has no UTC offset (set ISO_WITHOUT_OFFSET=utc to read it as UTC)",
            )
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return (parsed - _EPOCH) // _ONE_MS
    except OverflowError:
        raise Reject(INVALID_TIME, f"{field} {value[:64]!r} is out of range") from None


def _wrong_form(field: str, fmt: str, expected: str, value: Any) -> Reject:
    return Reject(INVALID_TIME, f"{field} must be {expected} ({fmt}), got {type(value).__name__}")


def time_converter(fmt: str, assume_utc: bool = False) -> Callable[[Any, str], int]:
    """``(value, field name) -> epoch ms`` for a declared format; raises :class:`Reject`."""

    def auto(value: Any, field: str) -> int:
        if type(value) is int:
            return value
        if type(value) is str:
            return parse_iso(value, field, assume_utc)
        raise Reject(
            INVALID_TIME,
            f"{field} must be epoch milliseconds (integer) or an ISO-8601 string, got {type(value).__name__}",
        )

    def epoch_ms(value: Any, field: str) -> int:
        if type(value) is int:
            return value
        raise _wrong_form(field, "epoch_ms", "an integer of epoch milliseconds", value)

    def epoch_s(value: Any, field: str) -> int:
        if _is_number(value):
            try:
                return round(value * 1000)
            except OverflowError:
                raise Reject(INVALID_TIME, f"{field} {value!r} is out of range") from None
        raise _wrong_form(field, "epoch_s", "a number of epoch seconds", value)

    def epoch_us(value: Any, field: str) -> int:
        if type(value) is int:
            return value // 1000
        raise _wrong_form(field, "epoch_us", "an integer of epoch microseconds", value)

    def epoch_ns(value: Any, field: str) -> int:
        if type(value) is int:
            return value // 1_000_000
        raise _wrong_form(field, "epoch_ns", "an integer of epoch nanoseconds", value)

    def iso8601(value: Any, field: str) -> int:
        if type(value) is str:
            return parse_iso(value, field, assume_utc)
        raise _wrong_form(field, "iso8601", "an ISO-8601 string", value)

    converters: dict[str, Callable[[Any, str], int]] = {
        "auto": auto,
        "epoch_ms": epoch_ms,
        "epoch_s": epoch_s,
        "epoch_us": epoch_us,
        "epoch_ns": epoch_ns,
        "iso8601": iso8601,
    }
    return converters[fmt]


def unit_hint(raw: Any, fmt: str, min_ms: int, now_ms: int, format_var: str) -> str | None:
    """When ``raw`` is a number that is implausible in ``fmt`` but plausible in
    another unit: ``looks like epoch seconds: set CLICKS_TIME_FORMAT=epoch_s``."""
    if not _is_number(raw):
        return None
    declared = "epoch_ms" if fmt == "auto" else fmt
    latest = now_ms + MAX_FUTURE_SKEW_MS
    for unit, name, factor in _UNITS:
        if unit != declared and min_ms <= raw * factor <= latest:
            return f"looks like {name}: set {format_var}={unit}"
    return None


def check_plausible(ts_ms: int, min_ms: int, now_ms: int, what: str) -> None:
    """Refuse an event time before ``min_ms`` or more than 24 h after ``now_ms``."""
    if ts_ms < min_ms:
        raise Reject(
            INVALID_TIME,
            f"{what} {ts_ms} ms ({format_event_time(ts_ms)}) is before EVENT_TIME_MIN "
            f"{format_event_time(min_ms)}",
        )
    if ts_ms > now_ms + MAX_FUTURE_SKEW_MS:
        raise Reject(
            INVALID_TIME,
            f"{what} {ts_ms} ms is more than 24 h after processing time {now_ms}",
        )


def format_event_time(ts_ms: int) -> str:
    """Epoch ms as ISO-8601 UTC with milliseconds, e.g. ``2026-01-01T00:30:00.000+00:00``."""
    try:
        return (_EPOCH + ts_ms * _ONE_MS).isoformat(timespec="milliseconds")
    except OverflowError:
        return "out of range"
