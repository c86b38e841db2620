"""The synthetic data generator and the topic reader.

Unit tests check :func:`generate_records` without Kafka (reproducibility,
counts, bad kinds, ordering, formats); the broker tests produce with the CLI,
read back with :func:`read_all` and require exactly what was generated.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections import Counter, defaultdict
from datetime import datetime

import orjson
import pytest

from clickstream import generate, read_topic
from clickstream.generate import (
    BAD_KINDS,
    CLICKS,
    PROFILES,
    GenerateOptions,
    generate_records,
    parse_start_ms,
    split_by_topic,
    summarize,
)
from clickstream.read_topic import ReadTimeout, TopicNotFound, read_all

START_MS = parse_start_ms(generate.DEFAULT_START)


def event_ms(value) -> int:
    """A generated time field (epoch ms or ISO-8601 with offset) as epoch ms."""
    if isinstance(value, int):
        return value
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return int(parsed.timestamp() * 1000)


def good(records, role):
    return [r for r in records if r.topic_role == role and not r.kind.startswith("bad:")]


# ---------------------------------------------------------------- unit tests


def test_same_seed_gives_identical_records_and_another_seed_does_not():
    """Reproducibility is what lets tests and benchmarks rebuild the expected data."""
    options = GenerateOptions(
        users=20, clicks=300, bad_fraction=0.2, unknown_fraction=0.1, out_of_order_ms=2000, seed=7
    )
    first = list(generate_records(options))
    assert first == list(generate_records(options))
    other = list(generate_records(dataclasses.replace(options, seed=8)))
    assert other != first
    assert len(other) == len(first)  # counts do not depend on the seed


def test_counts_match_the_options():
    options = GenerateOptions(
        users=20, versions_per_user=4, clicks=500, bad_fraction=0.1, unknown_fraction=0.1
    )
    records = list(generate_records(options))
    report = summarize(records)
    assert report.profiles_produced == 80
    assert report.clicks_produced == 500
    assert report.unknown_user_clicks == 50
    bad = {role: sum(kinds.values()) for role, kinds in report.bad_records.items()}
    assert bad == {PROFILES: 8, CLICKS: 50}
    assert len(records) == 80 + 500 + 8 + 50


def test_every_bad_kind_appears_in_both_topics():
    records = list(generate_records(GenerateOptions(users=10, clicks=60, bad_fraction=0.5)))
    for role in (PROFILES, CLICKS):
        kinds = {r.kind for r in records if r.topic_role == role and r.kind.startswith("bad:")}
        assert kinds == set(BAD_KINDS), role


def test_bad_records_are_really_bad():
    """Each bad kind breaks exactly the rule its name says."""
    records = list(generate_records(GenerateOptions(users=10, clicks=60, bad_fraction=0.5)))
    for r in (r for r in records if r.kind.startswith("bad:")):
        time_field = "updated_at" if r.topic_role == PROFILES else "ts"
        kind = r.kind[4:]
        if kind == "tombstone":
            assert r.value is None and r.key
            continue
        if kind == "non_utf8":
            with pytest.raises(UnicodeDecodeError):
                r.value.decode("utf-8")
            continue
        if kind == "invalid_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(r.value)
            continue
        body = json.loads(r.value)
        if kind.startswith("not_object"):
            assert not isinstance(body, dict)
            continue
        assert isinstance(body, dict)
        if kind == "missing_user_id":
            assert "user_id" not in body and r.key is None
        elif kind.startswith("user_id_"):
            expected = {"float": float, "bool": bool, "object": dict, "null": type(None)}
            assert type(body["user_id"]) is expected[kind[len("user_id_") :]]
        elif kind == "time_unparseable":
            assert body[time_field] == "yesterday"
        elif kind == "time_float":
            assert body[time_field] == 1.5
        elif kind == "time_naive":
            assert datetime.fromisoformat(body[time_field]).tzinfo is None


def test_profiles_are_produced_in_time_order_per_user():
    options = GenerateOptions(users=30, versions_per_user=5, clicks=0)
    per_user = defaultdict(list)
    formats = Counter()
    for r in good(generate_records(options), PROFILES):
        body = orjson.loads(r.value)
        assert r.key == body["user_id"].encode()
        assert body["tier"] in ("free", "pro", "enterprise")
        formats[type(body["updated_at"])] += 1
        per_user[body["user_id"]].append((event_ms(body["updated_at"]), body["version"]))
    assert len(per_user) == 30
    assert formats[int] and formats[str]  # both time formats are mixed in
    for versions in per_user.values():
        assert [v for _, v in versions] == [1, 2, 3, 4, 5]
        times = [t for t, _ in versions]
        assert times == sorted(times) and len(set(times)) == 5
        assert times[0] == START_MS
        assert all(START_MS <= t <= START_MS + 3600_000 for t in times)


def test_click_times_formats_and_unknown_users():
    options = GenerateOptions(users=10, clicks=400, unknown_fraction=0.25)
    records = list(generate_records(options))
    profiled = {r.key for r in good(records, PROFILES)}
    times, formats = [], Counter()
    for r in good(records, CLICKS):
        body = orjson.loads(r.value)
        assert r.key == body["user_id"].encode()
        assert body["action"] in ("view", "click", "add_to_cart")
        assert (r.key in profiled) == (r.kind == "click")
        if "ts" in body:
            assert r.timestamp_ms is None
            formats[type(body["ts"]).__name__] += 1
            times.append(event_ms(body["ts"]))
        else:
            formats["missing"] += 1
            times.append(r.timestamp_ms)  # the message timestamp carries the time
    assert set(formats) == {"int", "str", "missing"}
    assert times == sorted(times)  # in order without --out-of-order-ms
    assert times[0] >= START_MS and times[-1] <= START_MS + 3600_000


def test_out_of_order_jitter_stays_bounded():
    options = GenerateOptions(users=5, clicks=300, out_of_order_ms=60_000)
    times = []
    for r in good(generate_records(options), CLICKS):
        body = orjson.loads(r.value)
        times.append(event_ms(body["ts"]) if "ts" in body else r.timestamp_ms)
    assert times != sorted(times)
    assert min(times) >= START_MS
    running_max = times[0]
    for t in times:
        assert t >= running_max - 60_000
        running_max = max(running_max, t)


def test_numeric_user_ids_are_ints_in_clicks_and_strings_in_profiles():
    options = GenerateOptions(users=5, clicks=50, numeric_user_ids=True)
    profiles, clicks = split_by_topic(generate_records(options))
    assert {orjson.loads(r.value)["user_id"] for r in profiles} == {"1", "2", "3", "4", "5"}
    for r in clicks:
        user_id = orjson.loads(r.value)["user_id"]
        assert type(user_id) is int and r.key == str(user_id).encode()


def test_interleave_reorders_but_keeps_the_same_records():
    base = dict(users=10, clicks=200, bad_fraction=0.1)
    first = list(generate_records(GenerateOptions(**base)))
    mixed = list(generate_records(GenerateOptions(**base, profiles_first=False)))
    assert Counter(first) == Counter(mixed)
    roles = [r.topic_role for r in first]
    assert roles == sorted(roles, key=lambda role: role != PROFILES)
    assert [r.topic_role for r in mixed] != roles
    # Each topic's own order does not depend on the interleaving.
    assert split_by_topic(first) == split_by_topic(mixed)


def test_rate_paces_clicks_at_wall_clock_event_time():
    options = GenerateOptions(users=2, clicks=20, rate=200.0)
    before = int(time.time() * 1000)
    started = time.monotonic()
    records = list(generate_records(options))
    elapsed = time.monotonic() - started
    assert 0.08 <= elapsed < 2.0
    for r in good(records, CLICKS):
        body = orjson.loads(r.value)
        t = event_ms(body["ts"]) if "ts" in body else r.timestamp_ms
        assert before - 1000 <= t <= int(time.time() * 1000) + 1000


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="bad_fraction"):
        GenerateOptions(bad_fraction=1.5)
    with pytest.raises(ValueError, match="no UTC offset"):
        GenerateOptions(start="2026-01-01T00:00:00")
    with pytest.raises(SystemExit) as exit_info:
        generate.main(["--users", "0"])
    assert exit_info.value.code == 2


# ------------------------------------------------------- against the broker


def create(broker, topic_names, partitions, *bases):
    names = topic_names(*bases)
    broker.create_topics({name: partitions for name in names.values()})
    return names


@pytest.mark.broker
def test_generate_then_read_back_exactly(broker, topic_names, tmp_path, capsys):
    names = create(broker, topic_names, 3, "profiles", "clicks")
    argv = [
        "--users",
        "30",
        "--clicks",
        "600",
        "--versions-per-user",
        "3",
        "--bad-fraction",
        "0.1",
        "--unknown-fraction",
        "0.1",
        "--out-of-order-ms",
        "5000",
        "--interleave",
        "--seed",
        "11",
    ]
    report_path = tmp_path / "report.json"
    code = generate.main(
        [
            *argv,
            "--bootstrap-servers",
            broker.bootstrap_servers,
            "--profiles-topic",
            names["profiles"],
            "--clicks-topic",
            names["clicks"],
            "--json-report",
            str(report_path),
        ]
    )
    assert code == 0
    assert "delivery failures:    0" in capsys.readouterr().out

    expected_profiles, expected_clicks = split_by_topic(
        generate_records(generate.options_from_args(generate.build_parser().parse_args(argv)))
    )
    report = json.loads(report_path.read_text())
    assert report["profiles_produced"] == 90 and report["clicks_produced"] == 600
    assert report["unknown_user_clicks"] == 60 and report["delivery_failures"] == 0
    assert report["delivered"] == len(expected_profiles) + len(expected_clicks)
    assert report["bad_total"] == 9 + 60

    profiles = read_all(broker.bootstrap_servers, names["profiles"])
    clicks = read_all(broker.bootstrap_servers, names["clicks"])
    assert len(profiles) == len(expected_profiles) == 99
    assert len(clicks) == len(expected_clicks) == 660
    for got, expected in ((profiles, expected_profiles), (clicks, expected_clicks)):
        assert Counter((r.key, r.value) for r in got) == Counter((r.key, r.value) for r in expected)
        assert len({r.partition for r in got}) == 3

    # An explicit message timestamp (clicks without "ts") survives the broker.
    stamped = {(r.key, r.value): r.timestamp_ms for r in expected_clicks if r.timestamp_ms}
    assert stamped
    for r in clicks:
        if (r.key, r.value) in stamped:
            assert r.timestamp_ms == stamped[(r.key, r.value)]

    # Each user's profile versions are on one partition, in version order.
    good_profiles = {(r.key, r.value) for r in expected_profiles if r.kind == "profile"}
    seen = defaultdict(list)
    for r in profiles:  # read_all sorts by (partition, offset)
        if (r.key, r.value) in good_profiles:
            seen[r.key].append((r.partition, orjson.loads(r.value)["version"]))
    assert len(seen) == 30
    for versions in seen.values():
        assert len({p for p, _ in versions}) == 1
        assert [v for _, v in versions] == [1, 2, 3]


@pytest.mark.broker
def test_generate_refuses_missing_topics(broker, topic_names, capsys):
    names = topic_names("profiles", "clicks")
    code = generate.main(
        [
            "--users",
            "2",
            "--clicks",
            "2",
            "--bootstrap-servers",
            broker.bootstrap_servers,
            "--profiles-topic",
            names["profiles"],
            "--clicks-topic",
            names["clicks"],
        ]
    )
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.broker
def test_read_topic_count_json_limit_and_empty(broker, topic_names, capsys):
    names = create(broker, topic_names, 2, "data", "empty")
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for i in range(250):  # many records per batch: the case the high watermark gets wrong
        producer.produce(names["data"], key=b"k%d" % (i % 7), value=b"v%d" % i, partition=0)
    producer.produce(
        names["data"],
        key=None,
        value=b"\xff\x00raw",
        partition=1,
        headers=[("h", b"1")],
        timestamp=1767225600000,
    )
    producer.produce(names["data"], key=b"t", value=None, partition=1)
    assert producer.flush(10) == 0
    bootstrap = ["--bootstrap-servers", broker.bootstrap_servers]

    assert read_topic.main([names["data"], "--count", *bootstrap]) == 0
    assert capsys.readouterr().out.splitlines() == ["partition 0: 250", "partition 1: 2", "total: 252"]
    assert read_topic.main([names["empty"], "--count", *bootstrap]) == 0
    assert capsys.readouterr().out.splitlines() == ["partition 0: 0", "partition 1: 0", "total: 0"]
    assert read_all(broker.bootstrap_servers, names["empty"], timeout_s=10) == []

    assert read_topic.main([names["data"], "--json", *bootstrap]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 252
    raw = next(line for line in lines if line["partition"] == 1 and line["offset"] == 0)
    assert raw["key"] is None and base64.b64decode(raw["value_b64"]) == b"\xff\x00raw"
    assert raw["headers"] == [{"key": "h", "value": "1"}]
    assert raw["timestamp"] == 1767225600000
    tombstone = next(line for line in lines if line["partition"] == 1 and line["offset"] == 1)
    assert tombstone["value"] is None and tombstone["key"] == "t"
    assert {line["value"] for line in lines if line["partition"] == 0} == {f"v{i}" for i in range(250)}

    assert read_topic.main([names["data"], "--limit", "5", *bootstrap]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


@pytest.mark.broker
def test_read_topic_missing_topic(broker, topic_names, capsys):
    missing = topic_names("missing")["missing"]
    assert read_topic.main([missing, "--bootstrap-servers", broker.bootstrap_servers]) == 2
    assert f"topic {missing!r} does not exist" in capsys.readouterr().err
    with pytest.raises(TopicNotFound):
        read_all(broker.bootstrap_servers, missing, timeout_s=5)
    assert issubclass(ReadTimeout, TimeoutError)
