"""Where a topic's records keep their key and event time: :class:`RecordMapping`,
and the parser built from it once at start-up.

A parser takes one :class:`SourceRecord` and returns an :class:`Event` (the
mapped key, the event time, the original bytes and where the record came
from) or a :class:`DeadLetter` naming the reason. It never raises on data.

Rules:

* the value must be UTF-8 JSON whose top level is an object (also when the
  key comes from the message key);
* the key is at a dotted field path (``customer.id``) or is the Kafka message
  key (``@key``, UTF-8). A field key must be a non-empty string or an integer
  (not a bool or a float); integers are normalised to their decimal string.
  An absent key (a missing field, a path through a non-object, no message
  key) is ``missing_user_id``; a null, empty or other-typed one is
  ``invalid_user_id``, whatever the field is called;
* the event time is at a dotted field path read in the declared format (see
  :mod:`operators.event_parsing`), or is the Kafka message timestamp
  (``@timestamp``). When the field is absent, ``time_fallback="timestamp"``
  uses the message timestamp and ``"none"`` dead-letters the record. A
  present but unusable value is an error, never silently replaced;
* the event time must be plausible (``EVENT_TIME_MIN`` up to 24 h ahead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from operators.event_parsing import (
    DEFAULT_EVENT_TIME_MIN_MS,
    EMPTY_VALUE,
    INVALID_JSON,
    INVALID_TIME,
    INVALID_USER_ID,
    MAX_FUTURE_SKEW_MS,
    MISSING_USER_ID,
    NOT_AN_OBJECT,
    Reject,
    check_plausible,
    time_converter,
    unit_hint,
)
from operators.records import DeadLetter, Event, SourceRecord, dumps_compact, new_event

log = logging.getLogger("operators.record_mapping")

#: The key is the Kafka message key.
MESSAGE_KEY = "@key"
#: The event time is the Kafka message timestamp.
MESSAGE_TIMESTAMP = "@timestamp"

#: A parser: (record, topic, processing time in epoch ms) -> event or dead letter.
Parser = Callable[[SourceRecord, str, int], Event | DeadLetter]
_MISSING = object()


@dataclass(frozen=True)
class RecordMapping:
    """How to find one input's key and event time (one per input topic).

    ``role`` names the input in settings and messages: ``clicks`` reads
    ``CLICKS_*`` and dead-letters at stage ``decode_click``.
    """

    role: str = "clicks"
    key: str = "user_id"
    time: str = "ts"
    time_fallback: str = "timestamp"
    time_format: str = "auto"
    iso_without_offset: str = "reject"
    event_time_min_ms: int = DEFAULT_EVENT_TIME_MIN_MS
    #: Top-level fields of the value to keep (the value is re-encoded with only
    #: these); None keeps the original bytes unchanged.
    keep_fields: tuple[str, ...] | None = None

    @property
    def stage(self) -> str:
        """The ``dlq.stage`` of records this mapping rejects."""
        return "decode_" + self.role.rstrip("s")

    @property
    def format_var(self) -> str:
        return f"{self.role.upper()}_TIME_FORMAT"


def split_path(path: str) -> tuple[str, ...]:
    """``customer.id`` -> ``("customer", "id")``; raises ValueError on an empty part."""
    parts = tuple(path.split("."))
    if not path or any(not p for p in parts):
        raise ValueError(f"{path!r} is not a dotted field path (empty part)")
    return parts


def _lookup(obj: dict, path: tuple[str, ...]) -> Any:
    """The value at ``path``, or ``_MISSING`` (absent, or a path through a non-object)."""
    value: Any = obj
    for part in path:
        if type(value) is not dict:
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def make_parser(mapping: RecordMapping, fast: bool = True) -> Parser:
    """The parser for ``mapping``; every decision that depends only on the
    mapping is taken here, once. ``fast=False``: without the inline fast path
    (the same results, slower; for tests that check exactly that)."""
    stage = mapping.stage
    key_from_message = mapping.key == MESSAGE_KEY
    key_path = () if key_from_message else split_path(mapping.key)
    key_name = mapping.key
    # A one-part path (the default) is read with one dict lookup.
    key_field = key_path[0] if len(key_path) == 1 else None
    time_from_message = mapping.time == MESSAGE_TIMESTAMP
    time_path = () if time_from_message else split_path(mapping.time)
    time_name = mapping.time
    time_field = time_path[0] if len(time_path) == 1 else None
    fallback_to_timestamp = mapping.time_fallback == "timestamp"
    fmt = mapping.time_format
    to_ms = time_converter(fmt, mapping.iso_without_offset == "utc")
    min_ms = mapping.event_time_min_ms
    keep = mapping.keep_fields
    format_var = mapping.format_var
    fallback_var = f"{mapping.role.upper()}_TIME_FALLBACK"
    hinted: set = set()
    loads = orjson.loads
    JSONDecodeError = orjson.JSONDecodeError

    def read_key(obj: dict, record: SourceRecord) -> str:
        if key_from_message:
            raw = record.key
            if raw is None:
                raise Reject(MISSING_USER_ID, "no message key (key @key)")
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                raise Reject(INVALID_USER_ID, "message key is not UTF-8") from None
            if not text:
                raise Reject(INVALID_USER_ID, "message key is empty")
            return text
        uid = obj.get(key_field, _MISSING) if key_field is not None else _lookup(obj, key_path)
        if type(uid) is str:
            if uid:
                return uid
            raise Reject(INVALID_USER_ID, f"{key_name} is an empty string")
        if type(uid) is int:
            return str(uid)
        if uid is _MISSING:
            raise Reject(MISSING_USER_ID, f"no field {key_name}")
        raise Reject(
            INVALID_USER_ID,
            f"{key_name} must be a non-empty string or an integer, got {type(uid).__name__}",
        )

    def message_time(record: SourceRecord, why: str, now_ms: int) -> int:
        if record.timestamp_ms is None:
            raise Reject(INVALID_TIME, f"{why} and no Kafka message timestamp")
        check_plausible(record.timestamp_ms, min_ms, now_ms, "Kafka message timestamp")
        return record.timestamp_ms

    def read_time(obj: dict, record: SourceRecord, now_ms: int) -> int:
        if time_from_message:
            return message_time(record, "time @timestamp", now_ms)
        raw = obj.get(time_field, _MISSING) if time_field is not None else _lookup(obj, time_path)
        if raw is _MISSING:
            if not fallback_to_timestamp:
                raise Reject(INVALID_TIME, f"no field {time_name} ({fallback_var}=none)")
            return message_time(record, f"no field {time_name}", now_ms)
        if raw is None:
            raise Reject(INVALID_TIME, f"{time_name} is null")
        try:
            ts = to_ms(raw, time_name)
            check_plausible(ts, min_ms, now_ms, "event time")
        except Reject as rej:
            hint = unit_hint(raw, fmt, min_ms, now_ms, format_var)
            if hint is None:
                raise
            if hint not in hinted:
                hinted.add(hint)
                log.warning(
                    "%s: %s %r is implausible: %s (records dead-lettered)", mapping.role, time_name, raw, hint
                )
            raise Reject(rej.reason, f"{rej.detail}: {hint}") from None
        return ts

    def finish(obj: dict, record: SourceRecord, topic: str, now_ms: int) -> Event | DeadLetter:
        """Key and time of a decoded object, with a reason for each failure."""
        try:
            key = read_key(obj, record)
            ts_ms = read_time(obj, record, now_ms)
        except Reject as rej:
            return DeadLetter(record, topic, rej.reason, rej.detail, stage)
        value = record.value if keep is None else dumps_compact({f: obj[f] for f in keep if f in obj})
        return new_event((key, ts_ms, value, topic, record.partition, record.offset, record.key))

    def checked(record: SourceRecord, topic: str, now_ms: int) -> Event | DeadLetter:
        """Every rule, with a reason for each failure (the slow path)."""
        value = record.value
        try:
            if not value:
                raise Reject(EMPTY_VALUE, "record has no value")
            try:
                obj = loads(value)
            except JSONDecodeError as exc:
                raise Reject(INVALID_JSON, str(exc)[:200]) from None
            if type(obj) is not dict:
                raise Reject(NOT_AN_OBJECT, f"top-level JSON is {type(obj).__name__}, not an object")
        except Reject as rej:
            return DeadLetter(record, topic, rej.reason, rej.detail, stage)
        return finish(obj, record, topic, now_ms)

    # The fast path: key and time fields that are plainly valid, decided
    # inline (one-part paths with one dict lookup); anything else, and every
    # error, takes the checked path, which applies the same rules.
    if not fast or key_from_message or time_from_message or fmt in ("epoch_us", "epoch_ns"):
        return checked
    numeric_ms = fmt in ("auto", "epoch_ms")
    seconds = fmt == "epoch_s"
    lookup = _lookup
    max_skew = MAX_FUTURE_SKEW_MS
    iso = fmt in ("auto", "iso8601")
    fromisoformat = datetime.fromisoformat
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    one_ms = timedelta(milliseconds=1)

    def parse(record: SourceRecord, topic: str, now_ms: int) -> Event | DeadLetter:
        value = record.value
        if value:
            try:
                obj = loads(value)
            except JSONDecodeError:
                return checked(record, topic, now_ms)
            if type(obj) is dict:
                uid = obj.get(key_field) if key_field is not None else lookup(obj, key_path)
                raw = obj.get(time_field, _MISSING) if time_field is not None else lookup(obj, time_path)
                if type(uid) is str and uid:
                    key = uid
                elif type(uid) is int:
                    key = str(uid)
                else:
                    return finish(obj, record, topic, now_ms)
                if type(raw) is int and numeric_ms:
                    ts_ms = raw
                elif seconds and (type(raw) is float or type(raw) is int) and -1e16 < raw < 1e16:
                    ts_ms = round(raw * 1000)
                elif type(raw) is str and iso:
                    try:
                        parsed = fromisoformat(raw)
                    except ValueError:
                        return finish(obj, record, topic, now_ms)
                    if parsed.tzinfo is None:
                        return finish(obj, record, topic, now_ms)
                    ts_ms = (parsed - epoch) // one_ms
                elif raw is _MISSING and fallback_to_timestamp:
                    stamp = record.timestamp_ms
                    if stamp is None:
                        return finish(obj, record, topic, now_ms)
                    ts_ms = stamp
                else:
                    return finish(obj, record, topic, now_ms)
                if min_ms <= ts_ms <= now_ms + max_skew:
                    if keep is not None:
                        value = dumps_compact({f: obj[f] for f in keep if f in obj})  # kept in state
                    return new_event((key, ts_ms, value, topic, record.partition, record.offset, record.key))
                return finish(obj, record, topic, now_ms)
        return checked(record, topic, now_ms)

    return parse


#: The default mappings (the package's original record contract).
DEFAULT_CLICKS = RecordMapping("clicks", "user_id", "ts")
DEFAULT_PROFILES = RecordMapping("profiles", "user_id", "updated_at")
parse_click: Parser = make_parser(DEFAULT_CLICKS)
parse_profile: Parser = make_parser(DEFAULT_PROFILES)
