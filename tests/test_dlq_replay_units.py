"""The DLQ replay command (``python -m clickstream.dlq_replay``) without Kafka:
the filter, header, preview, planning and delivery logic, and its CLI errors.
(The runs on the broker are in ``test_dlq_replay.py``.)
"""

from __future__ import annotations

from collections import Counter

import pytest

from clickstream import dlq_replay
from clickstream.dlq_replay import (
    REPLAYED_FROM,
    Filters,
    check_plan,
    format_summary,
    header_text,
    main,
    original_headers,
    plan_replay,
    preview,
    replay,
    replay_headers,
    replay_item,
)
from clickstream.read_topic import Record

T0 = 1735689600000  # 2025-01-01T00:00:00Z


def dead(
    offset: int,
    reason: str | None,
    *,
    topic: str | None = "clicks",
    stage="decode_click",
    key: bytes | None = b"k",
    value: bytes | None = b"v",
    extra=(),
    timestamp=T0,
) -> Record:
    """A dead letter as the clicks job writes it."""
    headers = list(extra)
    if reason is not None:
        headers += [
            ("dlq.error", f"{reason}: detail".encode()),
            ("dlq.reason", reason.encode()),
            ("dlq.stage", stage.encode()),
        ]
    if topic is not None:
        headers += [
            ("dlq.topic", topic.encode()),
            ("dlq.partition", b"1"),
            ("dlq.offset", str(100 + offset).encode()),
        ]
    if timestamp is not None:
        headers.append(("dlq.timestamp", str(timestamp).encode()))
    return Record("dlq", 0, offset, key, value, headers, 1)


# ------------------------------------------------------------------ unit tests


def test_filters_or_within_a_flag_and_across_flags():
    a = dead(0, "invalid_json", topic="clicks", stage="decode_click").headers
    b = dead(1, "missing_user_id", topic="profiles", stage="decode_profile").headers
    c = dead(2, "invalid_time", topic="clicks").headers
    none = dead(3, None, topic=None).headers
    records = [a, b, c, none, None]
    assert [Filters().matches(h) for h in records] == [True] * 5
    by_reason = Filters(reasons=frozenset({"invalid_json", "invalid_time"}))
    assert [by_reason.matches(h) for h in records] == [True, False, True, False, False]
    both = Filters(
        reasons=frozenset({"invalid_json", "missing_user_id"}), source_topics=frozenset({"profiles"})
    )
    assert [both.matches(h) for h in records] == [False, True, False, False, False]
    stage = Filters(stages=frozenset({"decode_click"}))
    assert [stage.matches(h) for h in records] == [True, False, True, False, False]


def test_header_text_takes_the_last_value_the_dlq_writer_appended():
    headers = [("dlq.reason", b"spoofed"), ("x", None), ("dlq.reason", b"invalid_json")]
    assert header_text(headers, "dlq.reason") == "invalid_json"
    assert header_text(headers, "x") is None
    assert header_text(headers, "absent") is None
    assert header_text(None, "dlq.reason") is None


def test_replay_headers_keep_the_originals_drop_dlq_and_add_the_trace():
    original = [
        ("trace-id", b"t1"),
        ("origin", b"web"),
        ("origin", b"app"),
        ("empty", None),
        ("lineage", b"upstream/0/9"),
    ]
    record = dead(7, "invalid_json", extra=[*original, (REPLAYED_FROM, b"old/0/1")])
    # What an output sink appends after the dlq.* block is not original.
    headers = [*record.headers, ("lineage", b"dlq:clicks/1/107")]
    assert replay_headers(headers, "dlq", 0, 7) == [*original, (REPLAYED_FROM, b"dlq/0/7")]
    assert original_headers(headers) == original
    # Without the writer's dlq.error, every non-dlq.* header is kept.
    assert original_headers([("a", b"1"), ("dlq.reason", b"x"), ("b", b"2")]) == [("a", b"1"), ("b", b"2")]
    assert replay_headers(None, "d", 2, 3) == [(REPLAYED_FROM, b"d/2/3")]


def test_replay_item_keeps_bytes_key_null_and_timestamp():
    item = replay_item(dead(3, "empty_value", key=b"u9", value=None, timestamp=T0 + 5))
    assert (item.target, item.source_topic, item.reason, item.stage) == (
        "clicks",
        "clicks",
        "empty_value",
        "decode_click",
    )
    assert (item.key, item.value, item.timestamp_ms) == (b"u9", None, T0 + 5)
    assert item.origin == "dlq/0/3"
    assert replay_item(dead(3, "x"), to_topic="other").target == "other"
    assert replay_item(dead(3, "x"), keep_timestamps=False).timestamp_ms is None
    assert replay_item(dead(3, "x", timestamp=None)).timestamp_ms is None
    assert replay_item(dead(3, "x", extra=[("dlq.timestamp", b"junk")], timestamp=None)).timestamp_ms is None
    assert replay_item(dead(3, None, topic=None)).target is None


def test_plan_counts_everything_read_and_applies_the_limit_to_matches():
    records = [
        dead(i, r)
        for i, r in enumerate(
            ["invalid_json", "missing_user_id", "missing_user_id", "invalid_time", "missing_user_id"]
        )
    ]
    plan = plan_replay(records, "dlq", Filters(reasons=frozenset({"missing_user_id"})), limit=2)
    assert (plan.read, plan.matched, plan.selected) == (5, 3, 2)
    assert [i.dead_letter.offset for i in plan.items] == [1, 2]
    assert plan.by_source_and_reason() == Counter({("clicks", "missing_user_id"): 2})
    assert plan.targets == ["clicks"]
    assert plan_replay(records, "dlq", limit=0).selected == 0
    # Selection order is (partition, offset), whatever the consumption order.
    mixed = [
        Record("dlq", p, o, None, b"v", dead(o, "x").headers, 1)
        for p, o in [(1, 0), (0, 5), (1, 1), (0, 6), (2, 0), (0, 7)]
    ]
    assert [(i.dead_letter.partition, i.dead_letter.offset) for i in plan_replay(mixed, "dlq").items] == [
        (0, 5),
        (0, 6),
        (0, 7),
        (1, 0),
        (1, 1),
        (2, 0),
    ]
    assert [
        (i.dead_letter.partition, i.dead_letter.offset) for i in plan_replay(mixed, "dlq", limit=4).items
    ] == [(0, 5), (0, 6), (0, 7), (1, 0)]


def test_unroutable_records_and_replay_into_the_dlq_itself_are_refused():
    plan = plan_replay([dead(0, "x"), dead(1, "x", topic=None)], "dlq")
    with pytest.raises(dlq_replay.UsageError, match=r"1 selected record.*no dlq.topic.*dlq/0/1"):
        check_plan(plan)
    check_plan(plan_replay([dead(0, "x"), dead(1, "x", topic=None)], "dlq", to_topic="t"))
    with pytest.raises(dlq_replay.UsageError, match="into the dead-letter topic"):
        check_plan(plan_replay([dead(0, "x", topic="dlq")], "dlq"))


def test_preview_is_safe_for_a_terminal():
    assert preview(None) == "<null>"
    assert preview(b"") == "<empty>"
    assert preview(b'{"a": "\xc3\xa9"}') == '{"a": "é"}'
    assert preview(b"\xff\xfe\x1b[31m\\x\n\t\x00\xe2\x80\xae") == "\\xff\\xfe\\x1b[31m\\\\x\\n\\t\\x00\\u202e"
    assert preview(b"abcdef", width=3) == "abc... (+3 bytes)"


class FakeProducer:
    """Records produce calls; fails delivery for the topics in ``fail``."""

    def __init__(self, fail=(), undelivered: int = 0):
        self.fail = set(fail)
        self.sent: list[tuple[str, dict]] = []
        self.pending: list = []
        self.undelivered = undelivered

    def produce(self, topic, **kwargs):
        if topic == "raise":
            raise RuntimeError("Broker: Message size too large")
        self.sent.append((topic, kwargs))
        self.pending.append((topic, kwargs["on_delivery"]))

    def poll(self, _timeout):
        return 0

    def flush(self, _timeout):
        for topic, callback in self.pending[self.undelivered :]:
            callback("delivery failed" if topic in self.fail else None, None)
        self.pending = []
        return self.undelivered


def test_replay_produces_in_order_and_counts_delivery_reports():
    records = [
        dead(0, "missing_user_id", key=None, value=b'{"ts": 1}', extra=[("h", b"1")], timestamp=T0),
        dead(1, "empty_value", key=b"u9", value=None, timestamp=None),
        dead(2, "invalid_json", topic="profiles", value=b"{"),
    ]
    plan = plan_replay(records, "dlq")
    producer = FakeProducer()
    result = replay(plan.items, producer)
    assert [(t, k["key"], k["value"], k["headers"], k.get("timestamp")) for t, k in producer.sent] == [
        ("clicks", None, b'{"ts": 1}', [("h", b"1"), (REPLAYED_FROM, b"dlq/0/0")], T0),
        ("clicks", b"u9", None, [(REPLAYED_FROM, b"dlq/0/1")], None),
        ("profiles", b"k", b"{", [(REPLAYED_FROM, b"dlq/0/2")], T0),
    ]
    assert (result.produced, result.delivered, result.failures) == (3, 3, 0)
    assert result.delivered_by == Counter(
        {("clicks", "missing_user_id"): 1, ("clicks", "empty_value"): 1, ("profiles", "invalid_json"): 1}
    )
    text = format_summary(plan, result)
    assert "replayed:   3" in text and "failures:   0" in text


def test_failed_deliveries_are_counted():
    plan = plan_replay([dead(0, "a"), dead(1, "b", topic="bad"), dead(2, "c", topic="raise")], "dlq")
    result = replay(plan.items, FakeProducer(fail={"bad"}))
    assert (result.delivered, result.failures) == (1, 2)
    assert any("Message size too large" in f for f in result.failure_examples)
    result = replay(plan_replay([dead(0, "a"), dead(1, "a")], "dlq").items, FakeProducer(undelivered=2))
    assert (result.delivered, result.failures) == (0, 2)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--limit", "-1"], "--limit must be >= 0"),
        (["--reason", ""], "--reason must not be empty"),
        (["--dlq-topic", "d", "--to-topic", "d"], "--to-topic must not be the dead-letter topic"),
        (["--nope"], "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_configuration_errors_never_show_secrets(monkeypatch, capsys):
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cr3t-value")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "no-port-here")
    assert main(["--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "KAFKA_BOOTSTRAP_SERVERS" in err and "s3cr3t" not in err
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("KAFKA_NO_SUCH_PROPERTY", "1")
    assert main(["--dry-run", "--timeout", "1"]) == 1
    captured = capsys.readouterr()
    assert "no.such.property" in captured.err
    assert "s3cr3t" not in captured.err + captured.out
