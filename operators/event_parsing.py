"""Validation of click and profile records: user id and event time rules.

Each parser takes one :class:`SourceRecord` and returns either the valid
record type or a :class:`DeadLetter` that names the reason. Parsers never
raise on data: whatever the bytes are, the record is accounted for.

Rules (the package's record contract):

* the value must be UTF-8 JSON whose top level is an object;
* ``user_id`` must be a non-empty string or an integer (not a bool, float or
  anything else); integers are normalised to their decimal string;
* event time comes from ``ts`` (clicks) or ``updated_at`` (profiles): an
  integer of epoch milliseconds or an ISO-8601 string with a UTC offset. When
  the field is absent the Kafka message timestamp is used. A present but
  unusable value is an error, never silently replaced;
* event times must lie between 1970-01-01 and 24 h after the processing
  time: a far-future time would drag watermarks forward and expire state.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional, Tuple, Union

import orjson

from operators.records import (
    Click,
    DeadLetter,
    ProfileVersion,
    SourceRecord,
    new_click,
    new_profile_version,
)

#: How far ahead of the processing wall clock an event time may be.
MAX_FUTURE_SKEW_MS = 24 * 3600 * 1000

INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_USER_ID = "missing_user_id"
INVALID_USER_ID = "invalid_user_id"
INVALID_TIME = "invalid_time"
EMPTY_VALUE = "empty_value"
TOO_LARGE = "too_large"

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


class _Reject(Exception):
    def __init__(self, reason: str, detail: str):
        self.reason = reason
        self.detail = detail


def parse_event_time(value: Any, field: str) -> int:
    """Epoch ms from an int (epoch ms) or an ISO-8601 string with an offset."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _Reject(INVALID_TIME, f"{field} {value[:64]!r} is not ISO-8601") from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise _Reject(INVALID_TIME, f"{field} {value[:64]!r} has no UTC offset")
        try:
            return int(parsed.timestamp() * 1000)
        except (OverflowError, ValueError, OSError):
            raise _Reject(INVALID_TIME, f"{field} {value[:64]!r} is out of range") from None
    raise _Reject(
        INVALID_TIME,
        f"{field} must be epoch milliseconds (integer) or an ISO-8601 string, "
        f"got {type(value).__name__}",
    )


def _decode(record: SourceRecord, time_field: str, now_ms: int) -> Tuple[str, int, dict]:
    value = record.value
    if not value:
        raise _Reject(EMPTY_VALUE, "record has no value")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _Reject(INVALID_JSON, str(exc)[:200]) from None
    if type(obj) is not dict:
        raise _Reject(NOT_AN_OBJECT, f"top-level JSON is {type(obj).__name__}, not an object")
    if "user_id" not in obj:
        raise _Reject(MISSING_USER_ID, "no user_id field")
    uid = obj["user_id"]
    if type(uid) is str:
        if not uid:
            raise _Reject(INVALID_USER_ID, "user_id is an empty string")
        user_id = uid
    elif type(uid) is int:
        user_id = str(uid)
    else:
        raise _Reject(
            INVALID_USER_ID, f"user_id must be a string or an integer, got {type(uid).__name__}"
        )
    raw_time = obj.get(time_field)
    if raw_time is None:
        if time_field in obj:
            raise _Reject(INVALID_TIME, f"{time_field} is null")
        if record.timestamp_ms is None:
            raise _Reject(INVALID_TIME, f"no {time_field} field and no Kafka message timestamp")
        ts_ms = record.timestamp_ms
    else:
        ts_ms = parse_event_time(raw_time, time_field)
    if ts_ms < 0:
        raise _Reject(INVALID_TIME, f"event time {ts_ms} ms is before 1970")
    if ts_ms > now_ms + MAX_FUTURE_SKEW_MS:
        raise _Reject(
            INVALID_TIME, f"event time {ts_ms} ms is more than 24 h after processing time {now_ms}"
        )
    return user_id, ts_ms, obj


def parse_click(
    record: SourceRecord, topic: str, now_ms: int
) -> Union[Click, DeadLetter]:
    """A click (``user_id``, optional ``ts``) or the reason it is unusable."""
    try:
        user_id, ts_ms, _ = _decode(record, "ts", now_ms)
    except _Reject as rej:
        return DeadLetter(record, topic, rej.reason, rej.detail, "decode_click")
    return new_click((user_id, ts_ms, record.value, topic, record.partition, record.offset, record.key))


def parse_profile(
    record: SourceRecord, topic: str, now_ms: int
) -> Union[ProfileVersion, DeadLetter]:
    """A profile version (``user_id``, optional ``updated_at``) or why not."""
    try:
        user_id, ts_ms, _ = _decode(record, "updated_at", now_ms)
    except _Reject as rej:
        return DeadLetter(record, topic, rej.reason, rej.detail, "decode_profile")
    return new_profile_version((user_id, ts_ms, record.value, record.partition, record.offset))


def event_time_or_none(value: Any) -> Optional[int]:
    """Epoch ms of an event-time field value, or None if unusable (for tools)."""
    try:
        return parse_event_time(value, "time")
    except _Reject:
        return None


def format_event_time(ts_ms: int) -> str:
    """Epoch ms as ISO-8601 UTC with milliseconds, e.g. ``2026-01-01T00:30:00.000+00:00``."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
