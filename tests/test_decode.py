"""Every kind of bad record reaches the dead-letter output with its reason; good ones pass."""

from __future__ import annotations

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from operators.dead_letters import dead_letter_message
from operators.decode import decode
from operators.record_mapping import DEFAULT_CLICKS, parse_click, parse_profile
from operators.records import (
    Click,
    DeadLetter,
    PartitionStatus,
    ProfileVersion,
    SourceBatch,
    SourceRecord,
)
from story import T0

NOW = T0 + 3600_000  # processing time of the batches below
MSG_TS = T0 + 42


def record(value, key=b"k", offset=0, timestamp_ms=MSG_TS, headers=None) -> SourceRecord:
    return SourceRecord(0, offset, key, value, timestamp_ms, headers)


def js(obj) -> bytes:
    return orjson.dumps(obj)


GOOD_CLICKS = [
    # (value, expected user_id, expected ts_ms)
    (js({"user_id": "u1", "ts": T0, "page": "/"}), "u1", T0),
    (js({"user_id": 42, "ts": T0}), "42", T0),  # integer ids are normalised
    (js({"user_id": "u2", "ts": "2026-01-01T01:00:00+01:00"}), "u2", T0),
    (js({"user_id": "u3", "ts": "2026-01-01T00:00:00Z"}), "u3", T0),
    (js({"user_id": "u4"}), "u4", MSG_TS),  # no ts: the message timestamp
    (b'  {"user_id":"u5","ts":1767225600000}\n', "u5", T0),
]


@pytest.mark.parametrize("value,user_id,ts_ms", GOOD_CLICKS)
def test_valid_click_keeps_its_bytes_and_normalises_user_and_time(value, user_id, ts_ms):
    assert parse_click(record(value, offset=7), "user_clicks", NOW) == Click(
        user_id, ts_ms, value, "user_clicks", 0, 7, b"k"
    )


BAD_RECORDS = [
    # (value, timestamp, reason, detail fragment)
    (b"{not json", MSG_TS, "invalid_json", "unexpected character"),
    (b"\xff\xfe\x00garbage", MSG_TS, "invalid_json", "UTF-8"),
    (b"\xef\xbb\xbf{}", MSG_TS, "invalid_json", "BOM"),
    (b"[1, 2, 3]", MSG_TS, "not_an_object", "list"),
    (b"17", MSG_TS, "not_an_object", "int"),
    (b'"user_id"', MSG_TS, "not_an_object", "str"),
    (b"null", MSG_TS, "not_an_object", "NoneType"),
    (js({"ts": T0}), MSG_TS, "missing_user_id", "no field user_id"),
    (js({"user_id": None, "ts": T0}), MSG_TS, "invalid_user_id", "NoneType"),
    (js({"user_id": 1.5, "ts": T0}), MSG_TS, "invalid_user_id", "float"),
    (js({"user_id": True, "ts": T0}), MSG_TS, "invalid_user_id", "bool"),
    (js({"user_id": {"id": 1}, "ts": T0}), MSG_TS, "invalid_user_id", "dict"),
    (js({"user_id": "", "ts": T0}), MSG_TS, "invalid_user_id", "empty"),
    (js({"user_id": "u", "ts": "yesterday"}), MSG_TS, "invalid_time", "ISO-8601"),
    (js({"user_id": "u", "ts": "2026-01-01T00:00:00"}), MSG_TS, "invalid_time", "no UTC offset"),
    (js({"user_id": "u", "ts": 1.5}), MSG_TS, "invalid_time", "float"),
    (js({"user_id": "u", "ts": None}), MSG_TS, "invalid_time", "null"),
    (js({"user_id": "u", "ts": -1}), MSG_TS, "invalid_time", "before EVENT_TIME_MIN"),
    (
        js({"user_id": "u", "ts": "1969-12-31T23:59:59+00:00"}),
        MSG_TS,
        "invalid_time",
        "before EVENT_TIME_MIN",
    ),
    (js({"user_id": "u", "ts": 4102444800000}), MSG_TS, "invalid_time", "24 h after"),
    (js({"user_id": "u"}), None, "invalid_time", "no field ts and no Kafka message timestamp"),
    (None, MSG_TS, "empty_value", "no value"),
    (b"", MSG_TS, "empty_value", "no value"),
]


@pytest.mark.parametrize("value,timestamp_ms,reason,fragment", BAD_RECORDS)
def test_each_bad_click_kind_is_dead_lettered_with_its_reason(value, timestamp_ms, reason, fragment):
    rec = record(value, timestamp_ms=timestamp_ms)
    dead = parse_click(rec, "user_clicks", NOW)
    assert type(dead) is DeadLetter
    assert (dead.reason, dead.stage, dead.topic, dead.record) == (
        reason,
        "decode_click",
        "user_clicks",
        rec,
    )
    assert fragment in dead.detail


def test_profile_uses_updated_at_and_rejects_a_bad_one():
    good = js({"user_id": 7, "updated_at": "2026-01-01T00:00:00+00:00", "tier": "pro"})
    assert parse_profile(record(good), "user_profiles", NOW) == ProfileVersion(
        "7", T0, good, "user_profiles", 0, 0, b"k"
    )
    bad = parse_profile(record(js({"user_id": 7, "updated_at": "soon"})), "user_profiles", NOW)
    assert (bad.reason, bad.stage) == ("invalid_time", "decode_profile")
    # A click's `ts` means nothing to a profile: it falls back to the message time.
    other = js({"user_id": "p", "ts": 5})
    assert parse_profile(record(other), "user_profiles", NOW).ts_ms == MSG_TS


def test_dead_letter_message_keeps_original_bytes_key_and_headers():
    rec = SourceRecord(3, 99, b"the-key", b"\xff\x00raw", 1234, [("trace", b"abc")])
    message = dead_letter_message(
        DeadLetter(rec, "user_clicks", "invalid_json", "bad bytes", "decode_click"), "dlq"
    )
    assert message.topic == "dlq"
    assert message.key == b"the-key"
    assert message.value == b"\xff\x00raw"
    assert message.headers == [
        ("trace", b"abc"),
        ("dlq.error", b"invalid_json: bad bytes"),
        ("dlq.reason", b"invalid_json"),
        ("dlq.stage", b"decode_click"),
        ("dlq.topic", b"user_clicks"),
        ("dlq.partition", b"3"),
        ("dlq.offset", b"99"),
        ("dlq.timestamp", b"1234"),
    ]


def test_decode_operator_splits_a_mixed_batch_and_keeps_position():
    """A batch of good and bad records: goods on oks (with the batch's position
    and max event time), bads on errs, nothing lost, nothing crashes."""
    values = [value for value, *_ in GOOD_CLICKS] + [value for value, *_ in BAD_RECORDS]
    records = [record(v, offset=i) for i, v in enumerate(values)]
    records[-3] = records[-3]._replace(timestamp_ms=None)  # the "no timestamp" one
    source_batch = SourceBatch("user_clicks", 0, 1, records, PartitionStatus.FINISHED, NOW)

    flow = Dataflow("decode_story")
    decoded = decode("decode", op.input("in", flow, TestingSource([source_batch])), DEFAULT_CLICKS)
    oks, errs = [], []
    op.output("oks", decoded.oks, TestingSink(oks))
    op.output("errs", decoded.errs, TestingSink(errs))
    run_main(flow)

    assert len(oks) == 1
    good = oks[0]
    assert [c.key for c in good.items] == ["u1", "42", "u2", "u3", "u4", "u5"]
    assert good.max_event_ms == max(ts for *_, ts in GOOD_CLICKS)
    assert (good.status, good.polled_at_ms, good.partition_count) == (
        PartitionStatus.FINISHED,
        NOW,
        1,
    )
    assert len(errs) == 1
    assert [d.record.offset for d in errs[0]] == list(range(len(GOOD_CLICKS), len(values)))
    assert [d.reason for d in errs[0]] == [reason for _, _, reason, _ in BAD_RECORDS]
