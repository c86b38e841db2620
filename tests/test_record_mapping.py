"""Your topics, your schema: keys and event times found where the mapping says,
in the unit it declares; a wrong unit is refused with a detail naming the fix."""

from __future__ import annotations

import logging
import tracemalloc

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.record_mapping import RecordMapping, make_parser
from operators.records import DeadLetter, Event, SourceRecord
from story import T0

NOW = T0 + 3600_000
MSG_TS = T0 + 42
TOPIC = "user_clicks"


def rec(obj, key=b"k", timestamp_ms=MSG_TS, offset=5) -> SourceRecord:
    value = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    return SourceRecord(1, offset, key, value, timestamp_ms, None)


def parse(mapping: RecordMapping, record: SourceRecord):
    return make_parser(mapping)(record, TOPIC, NOW)


def event(key: str, ts_ms: int, record: SourceRecord) -> Event:
    return Event(key, ts_ms, record.value, TOPIC, 1, record.offset, record.key)


def dead(mapping: RecordMapping, record: SourceRecord) -> tuple:
    out = parse(mapping, record)
    assert type(out) is DeadLetter and out.record == record and out.stage == mapping.stage
    return out.reason, out.detail


# -- keys -------------------------------------------------------------------

NESTED = RecordMapping("clicks", key="customer.id", time="meta.at")


def test_a_nested_key_and_time_are_read_and_an_integer_id_is_normalised():
    r = rec({"customer": {"id": 42}, "meta": {"at": T0 + 7}, "page": "/"})
    assert parse(NESTED, r) == event("42", T0 + 7, r)


@pytest.mark.parametrize(
    "obj,reason,detail",
    [
        ({"meta": {"at": T0}}, "missing_user_id", "no field customer.id"),
        ({"customer": {}, "meta": {"at": T0}}, "missing_user_id", "no field customer.id"),
        # a path through a non-object is an absent key
        ({"customer": "42", "meta": {"at": T0}}, "missing_user_id", "no field customer.id"),
        ({"customer": [1], "meta": {"at": T0}}, "missing_user_id", "no field customer.id"),
        (
            {"customer": {"id": None}},
            "invalid_user_id",
            "customer.id must be a non-empty string or an integer, got NoneType",
        ),
        ({"customer": {"id": ""}}, "invalid_user_id", "customer.id is an empty string"),
        (
            {"customer": {"id": 4.0}},
            "invalid_user_id",
            "customer.id must be a non-empty string or an integer, got float",
        ),
        (
            {"customer": {"id": True}},
            "invalid_user_id",
            "customer.id must be a non-empty string or an integer, got bool",
        ),
    ],
)
def test_bad_nested_keys_keep_the_reason_names_and_name_the_configured_field(obj, reason, detail):
    assert dead(NESTED, rec(obj)) == (reason, detail)


MESSAGE_KEYED = RecordMapping("profiles", key="@key", time="modified")


def test_the_message_key_can_be_the_key_and_the_value_needs_no_id():
    r = rec({"modified": "2026-01-01T00:00:00Z", "tier": "gold"}, key=b"42")
    assert parse(MESSAGE_KEYED, r) == event("42", T0, r)


@pytest.mark.parametrize(
    "key,reason,detail",
    [
        (None, "missing_user_id", "no message key (key @key)"),
        (b"", "invalid_user_id", "message key is empty"),
        (b"\xff\xfe", "invalid_user_id", "message key is not UTF-8"),
    ],
)
def test_a_missing_or_unusable_message_key_is_dead_lettered(key, reason, detail):
    assert dead(MESSAGE_KEYED, rec({"modified": T0}, key=key)) == (reason, detail)


def test_the_value_must_still_be_a_json_object_when_the_key_is_the_message_key():
    assert dead(MESSAGE_KEYED, rec(b"[1]")) == ("not_an_object", "top-level JSON is list, not an object")


# -- time formats -----------------------------------------------------------


def fmt(time_format: str, **kw) -> RecordMapping:
    return RecordMapping("clicks", time="t", time_format=time_format, **kw)


@pytest.mark.parametrize(
    "time_format,raw,expected_ms",
    [
        ("auto", T0, T0),
        ("auto", "2026-01-01T01:00:00+01:00", T0),
        ("epoch_ms", T0 + 1, T0 + 1),
        ("epoch_s", 1_767_225_600, T0),
        ("epoch_s", 1_767_225_600.25, T0 + 250),
        ("epoch_s", 1_767_225_600.0004, T0),  # rounded to the nearest ms
        ("epoch_s", 1_767_225_600.0006, T0 + 1),
        ("epoch_us", 1_767_225_600_123_999, T0 + 123),  # floored to the ms
        ("epoch_ns", 1_767_225_600_123_999_999, T0 + 123),
        ("iso8601", "2026-01-01T00:00:00.5Z", T0 + 500),
        ("iso8601", "2025-12-31T19:00:00-05:00", T0),
    ],
)
def test_each_time_format_reads_its_own_form(time_format, raw, expected_ms):
    r = rec({"user_id": "u", "t": raw})
    assert parse(fmt(time_format), r) == event("u", expected_ms, r)


@pytest.mark.parametrize(
    "time_format,raw,detail",
    [
        (
            "epoch_ms",
            "2026-01-01T00:00:00Z",
            "t must be an integer of epoch milliseconds (epoch_ms), got str",
        ),
        ("epoch_ms", 1767225600000.5, "t must be an integer of epoch milliseconds (epoch_ms), got float"),
        ("epoch_s", "1767225600", "t must be a number of epoch seconds (epoch_s), got str"),
        ("epoch_s", True, "t must be a number of epoch seconds (epoch_s), got bool"),
        ("epoch_us", 1.5e15, "t must be an integer of epoch microseconds (epoch_us), got float"),
        ("epoch_ns", "x", "t must be an integer of epoch nanoseconds (epoch_ns), got str"),
        (
            "iso8601",
            T0,
            "t must be an ISO-8601 string (iso8601), got int"
            ": looks like epoch milliseconds: set CLICKS_TIME_FORMAT=epoch_ms",
        ),
        ("auto", [1], "t must be epoch milliseconds (integer) or an ISO-8601 string, got list"),
        ("epoch_s", 1e308, "t 1e+308 is out of range"),
        (
            "iso8601",
            "9999-12-31T23:59:59-23:59",
            f"event time 253402387139000 ms is more than 24 h after processing time {NOW}",
        ),
    ],
)
def test_an_explicit_format_accepts_only_its_own_form(time_format, raw, detail):
    assert dead(fmt(time_format), rec({"user_id": "u", "t": raw})) == ("invalid_time", detail)


def test_iso_without_offset_is_refused_by_default_and_read_as_utc_on_request():
    r = rec({"user_id": "u", "t": "2026-01-01T00:00:01"})
    assert dead(fmt("iso8601"), r) == (
        "invalid_time",
        "t '2026-01-01T00:00:01' has no UTC offset (set ISO_WITHOUT_OFFSET=utc to read it as UTC)",
    )
    assert parse(fmt("iso8601", iso_without_offset="utc"), r) == event("u", T0 + 1000, r)
    assert parse(fmt("auto", iso_without_offset="utc"), r) == event("u", T0 + 1000, r)


# -- no silent unit mistakes ------------------------------------------------

MIN = "2001-09-09T01:46:40.000+00:00"


@pytest.mark.parametrize(
    "time_format,raw,detail",
    [
        # epoch seconds read as milliseconds: 1970-01-21
        (
            "auto",
            1_767_225_600,
            f"event time 1767225600 ms (1970-01-21T10:53:45.600+00:00) is before EVENT_TIME_MIN {MIN}"
            ": looks like epoch seconds: set CLICKS_TIME_FORMAT=epoch_s",
        ),
        (
            "epoch_ms",
            1_767_225_600,
            f"event time 1767225600 ms (1970-01-21T10:53:45.600+00:00) is before EVENT_TIME_MIN {MIN}"
            ": looks like epoch seconds: set CLICKS_TIME_FORMAT=epoch_s",
        ),
        # fractional seconds under the default format
        (
            "auto",
            1_767_225_600.25,
            "t must be epoch milliseconds (integer) or an ISO-8601 string, got float"
            ": looks like epoch seconds: set CLICKS_TIME_FORMAT=epoch_s",
        ),
        # milliseconds read as microseconds
        (
            "epoch_us",
            T0,
            f"event time 1767225600 ms (1970-01-21T10:53:45.600+00:00) is before EVENT_TIME_MIN {MIN}"
            ": looks like epoch milliseconds: set CLICKS_TIME_FORMAT=epoch_ms",
        ),
        # microseconds and nanoseconds read as milliseconds: far in the future
        (
            "auto",
            T0 * 1000,
            f"event time {T0 * 1000} ms is more than 24 h after processing time {NOW}"
            ": looks like epoch microseconds: set CLICKS_TIME_FORMAT=epoch_us",
        ),
        (
            "epoch_ms",
            T0 * 1_000_000,
            f"event time {T0 * 1_000_000} ms is more than 24 h after processing time {NOW}"
            ": looks like epoch nanoseconds: set CLICKS_TIME_FORMAT=epoch_ns",
        ),
        # seconds read as nanoseconds
        (
            "epoch_ns",
            1_767_225_600,
            "event time 1767 ms (1970-01-01T00:00:01.767+00:00) is before EVENT_TIME_MIN "
            f"{MIN}: looks like epoch seconds: set CLICKS_TIME_FORMAT=epoch_s",
        ),
    ],
)
def test_a_wrong_unit_is_refused_and_the_detail_names_the_likely_one(time_format, raw, detail):
    assert dead(fmt(time_format), rec({"user_id": "u", "t": raw})) == ("invalid_time", detail)


def test_an_implausible_time_with_no_plausible_unit_has_no_hint():
    assert dead(fmt("auto"), rec({"user_id": "u", "t": 5})) == (
        "invalid_time",
        f"event time 5 ms (1970-01-01T00:00:00.005+00:00) is before EVENT_TIME_MIN {MIN}",
    )
    assert dead(fmt("iso8601"), rec({"user_id": "u", "t": "1999-01-01T00:00:00Z"}))[1] == (
        f"event time 915148800000 ms (1999-01-01T00:00:00.000+00:00) is before EVENT_TIME_MIN {MIN}"
    )


def test_the_first_unit_mistake_is_logged_once(caplog):
    parser = make_parser(fmt("auto"))
    with caplog.at_level(logging.WARNING, logger="operators.record_mapping"):
        for i in range(3):
            parser(rec({"user_id": "u", "t": 1_767_225_600 + i}), TOPIC, NOW)
    assert [r.getMessage() for r in caplog.records] == [
        "clicks: t 1767225600 is implausible: looks like epoch seconds: "
        "set CLICKS_TIME_FORMAT=epoch_s (records dead-lettered)"
    ]


def test_an_explicit_event_time_min_admits_small_times():
    r = rec({"user_id": "u", "t": 5})
    assert parse(fmt("auto", event_time_min_ms=0), r) == event("u", 5, r)
    assert dead(fmt("auto", event_time_min_ms=0), rec({"user_id": "u", "t": -1}))[0] == "invalid_time"


# -- the message timestamp --------------------------------------------------


def test_an_absent_time_falls_back_to_the_message_timestamp_unless_told_not_to():
    r = rec({"user_id": "u"})
    assert parse(fmt("epoch_s"), r) == event("u", MSG_TS, r)
    assert dead(fmt("epoch_s", time_fallback="none"), r) == (
        "invalid_time",
        "no field t (CLICKS_TIME_FALLBACK=none)",
    )
    assert dead(fmt("epoch_s"), rec({"user_id": "u"}, timestamp_ms=None)) == (
        "invalid_time",
        "no field t and no Kafka message timestamp",
    )
    # present but null is an error, never replaced
    assert dead(fmt("epoch_s"), rec({"user_id": "u", "t": None})) == ("invalid_time", "t is null")


def test_the_time_can_be_the_message_timestamp_whatever_the_value_holds():
    mapping = RecordMapping("clicks", time="@timestamp")
    r = rec({"user_id": "u", "ts": "garbage"})
    assert parse(mapping, r) == event("u", MSG_TS, r)
    assert dead(mapping, rec({"user_id": "u"}, timestamp_ms=None)) == (
        "invalid_time",
        "time @timestamp and no Kafka message timestamp",
    )
    assert dead(mapping, rec({"user_id": "u"}, timestamp_ms=1000))[1] == (
        f"Kafka message timestamp 1000 ms (1970-01-01T00:00:01.000+00:00) is before EVENT_TIME_MIN {MIN}"
    )


def test_kept_fields_reencode_the_value_with_only_those():
    mapping = RecordMapping("profiles", time="updated_at", keep_fields=("tier", "absent", "city"))
    r = rec({"user_id": "u", "updated_at": T0, "city": "Oslo", "tier": "gold", "ssn": "x"})
    out = parse(mapping, r)
    assert out == Event("u", T0, b'{"tier":"gold","city":"Oslo"}', TOPIC, 1, 5, b"k")
    assert mapping.stage == "decode_profile"


@pytest.mark.parametrize("fast", [True, False])
def test_kept_fields_values_held_in_state_take_their_size(fast):
    """Profiles with kept fields are held by the join: their re-encoded value
    must not carry orjson's whole output buffer (~4 KB each)."""
    parse_profile = make_parser(
        RecordMapping("profiles", time="updated_at", keep_fields=("tier",)), fast=fast
    )
    records = [rec({"user_id": f"u{i}", "updated_at": T0, "tier": "gold"}) for i in range(500)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [parse_profile(r, TOPIC, NOW) for r in records]
        per_event = (tracemalloc.get_traced_memory()[0] - before) / len(held)
    finally:
        tracemalloc.stop()
    assert {e.value for e in held} == {b'{"tier":"gold"}'}
    assert per_event < 600  # bytes: the event, its key and its 15-byte value


# -- the fast path decides exactly as the checked path ----------------------


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "x", "", str(T0)]),
    st.sampled_from([T0, T0 // 1000, T0 / 1000, T0 * 1000, T0 * 1_000_000, NOW + 10**9]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.dictionaries(st.sampled_from(["id", "at", "x"]), inner, max_size=3),
    max_leaves=6,
)
_objects = st.dictionaries(st.sampled_from(["user_id", "ts", "user", "t", "meta"]), _values, max_size=4)


@pytest.mark.parametrize(
    "mapping",
    [
        RecordMapping("clicks"),
        RecordMapping("clicks", key="user.id", time="meta.at", time_format="epoch_s"),
        RecordMapping("clicks", time="t", time_format="iso8601", iso_without_offset="utc"),
        RecordMapping("clicks", time="t", time_format="epoch_ms", time_fallback="none"),
        RecordMapping("profiles", key="user_id", time="ts", keep_fields=("x", "user")),
    ],
)
@settings(max_examples=300, deadline=None)
@given(obj=_objects, timestamp=st.sampled_from([None, MSG_TS, 5]))
def test_the_fast_path_decides_exactly_as_the_checked_path(mapping, obj, timestamp):
    record = rec(obj, timestamp_ms=timestamp)
    assert make_parser(mapping)(record, TOPIC, NOW) == make_parser(mapping, fast=False)(record, TOPIC, NOW)
