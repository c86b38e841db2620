"""The DLQ replay command (``python -m clickstream.dlq_replay``) on the broker.

The tests fill a DLQ with the real clicks job (``python -m bytewax.run
dataflows.clicks``, KAFKA_TAIL=false) from a known mix of good and bad clicks,
then: a dry run reports exact counts and produces nothing; ``--reason
missing_user_id --to-topic X`` puts exactly those original records on X; a
replay to the source topic followed by a second run of the job dead-letters
exactly the same records again. (The logic without Kafka is in
``test_dlq_replay_units.py``.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import orjson
import pytest

from clickstream.dlq_replay import (
    REPLAYED_FROM,
    header_text,
    main,
)
from clickstream.read_topic import read_all
from conftest import ROOT, job_command

T0 = 1735689600000  # 2025-01-01T00:00:00Z

# ------------------------------------------------------------- on the broker

CLICK = "decode_click"


def click(user, ts=None, **extra) -> bytes:
    body = {"user_id": user}
    if ts is not None:
        body["ts"] = ts
    body.update(extra)
    return orjson.dumps(body)


#: (partition, key, value, headers, reason or None for a good click), in production order.
INPUT = [
    (0, b"u1", click("u1", T0 + 1000, page="/"), [], None),
    (0, b"u1", b'{"user_id": "u1", "ts": 17356', [("trace-id", b"b1")], "invalid_json"),
    (1, b"u2", b'\xff\xfe\x1b[31m{"user_id"', [], "invalid_json"),
    (1, b"u2", click("u2", T0 + 2000, page="/cart"), [("trace-id", b"g2")], None),
    (
        0,
        None,
        orjson.dumps({"ts": T0, "page": "/a"}),
        [("trace-id", b"b3"), ("origin", b"web"), ("origin", b"app")],
        "missing_user_id",
    ),
    (1, b"anon-7", orjson.dumps({"page": "/b"}), [], "missing_user_id"),
    (0, b"u3", click("u3", "yesterday"), [], "invalid_time"),
    (1, b"u4", click("u4", 1.5), [("trace-id", b"b6")], "invalid_time"),
    (0, b"u9", None, [("trace-id", b"b7")], "empty_value"),
    (1, b"u1", click("u1", page="/no-ts"), [], None),  # event time = message timestamp
]
EXPECTED_REASONS = Counter(r for *_, r in INPUT if r is not None)


def produce(bootstrap: str, topic: str, rows) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    failures = []
    for i, (partition, key, value, headers, _) in enumerate(rows):
        producer.produce(
            topic,
            value=value,
            key=key,
            headers=headers or None,
            partition=partition,
            timestamp=T0 + i,
            on_delivery=lambda err, _m: err and failures.append(err),
        )
    assert producer.flush(10) == 0 and not failures


def run_clicks_job(broker, t: dict, dlq: str) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TAIL": "false",
        "STATE_SHARDS": "2",
        "CLICKS_TOPIC": t["clicks"],
        "PROFILES_TOPIC": t["profiles"],
        "JOINED_TOPIC": t["joined"],
        "UNMATCHED_TOPIC": t["unmatched"],
        "DLQ_TOPIC": dlq,
    }
    proc = subprocess.run(job_command("clicks"), env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-4000:]


def own_headers(headers) -> list:
    """The headers the job received: before its dlq.error block, without dlq.* (a replay's trace)."""
    headers = list(headers or [])
    names = [k for k, _ in headers]
    cut = len(names) - 1 - names[::-1].index("dlq.error")
    return [(k, v) for k, v in headers[:cut] if not k.startswith("dlq.")]


def originals(records) -> Counter:
    """(key, value, own headers, reason) of dead letters."""
    return Counter(
        (r.key, r.value, tuple(own_headers(r.headers)), header_text(r.headers, "dlq.reason")) for r in records
    )


def expected_dead(rows, extra_headers=()) -> Counter:
    return Counter(
        (key, value, tuple(headers) + tuple(extra_headers), reason)
        for _, key, value, headers, reason in rows
        if reason is not None
    )


@pytest.fixture(scope="module")
def filled(broker):
    """Topics with INPUT in clicks, one profile, and the DLQ the clicks job wrote.

    Shared by the tests below (one job run); only the last test writes to the
    clicks topic, and every test writes elsewhere to topics of its own.
    """
    suffix = os.urandom(3).hex()
    t = {base: f"dlq_replay_{suffix}_{base}" for base in ("clicks", "profiles", "joined", "unmatched", "dlq")}
    broker.create_topics({t["clicks"]: 2, t["profiles"]: 1, t["joined"]: 1, t["unmatched"]: 1, t["dlq"]: 1})
    bs = broker.bootstrap_servers
    produce(bs, t["clicks"], INPUT)
    produce(bs, t["profiles"], [(0, b"u1", orjson.dumps({"user_id": "u1", "updated_at": T0}), [], None)])
    run_clicks_job(broker, t, t["dlq"])
    dlq = read_all(bs, t["dlq"])
    assert originals(dlq) == expected_dead(INPUT)
    assert len(read_all(bs, t["joined"])) == 3
    return t, dlq


def replay_cli(broker, *argv: str) -> list[str]:
    return ["--bootstrap-servers", broker.bootstrap_servers, *argv]


pytest_broker = pytest.mark.broker


@pytest_broker
def test_dry_run_reports_exact_counts_and_produces_nothing(broker, filled, capsys, tmp_path, topic_names):
    t, dlq = filled
    x = topic_names("x")["x"]
    broker.create_topics({x: 1})
    clicks_before = len(read_all(broker.bootstrap_servers, t["clicks"]))
    report = tmp_path / "report.json"
    assert (
        main(
            replay_cli(
                broker, "--dlq-topic", t["dlq"], "--dry-run", "--show", "3", "--json-report", str(report)
            )
        )
        == 0
    )
    out = capsys.readouterr().out
    c = t["clicks"]
    table = [
        "selected by source topic and reason:",
        f"  {c}  empty_value      1",
        f"  {c}  invalid_json     2",
        f"  {c}  invalid_time     2",
        f"  {c}  missing_user_id  2",
        "selected by target topic:",
        f"  {c}  7",
        "dry run: nothing produced; would replay 7",
        "first 3 selected:",
    ]
    lines = out.splitlines()
    assert lines[:4] == [
        f"dlq topic:  {t['dlq']}",
        "read:       7",
        "filters:    none (every dead letter)",
        "selected:   7",
    ]
    assert lines[4:13] == table
    assert len(lines) == 16
    for line, rec in zip(lines[13:], dlq[:3], strict=False):
        src = f"{c}/{header_text(rec.headers, 'dlq.partition')}/{header_text(rec.headers, 'dlq.offset')}"
        assert line.startswith(
            f"  p0@{rec.offset} reason={header_text(rec.headers, 'dlq.reason')} from={src} -> {c} key="
        )
    data = orjson.loads(report.read_bytes())
    assert data["selected_by_source_topic"] == {c: dict(EXPECTED_REASONS)}
    assert (data["read"], data["selected"], data["dry_run"]) == (7, 7, True)
    assert "replayed" not in data

    # The non-UTF-8 value with an escape sequence is shown escaped, never raw.
    assert (
        main(
            replay_cli(
                broker, "--dlq-topic", t["dlq"], "--dry-run", "--reason", "invalid_json", "--to-topic", x
            )
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert 'value=\\xff\\xfe\\x1b[31m{"user_id" (17 bytes)' in out
    assert "selected:   2" in out and f"  {x}  2" in out

    # Nothing was produced anywhere.
    assert read_all(broker.bootstrap_servers, x) == []
    assert len(read_all(broker.bootstrap_servers, t["clicks"])) == clicks_before
    assert len(read_all(broker.bootstrap_servers, t["dlq"])) == 7


@pytest_broker
def test_replay_one_reason_to_another_topic(broker, filled, capsys, topic_names):
    t, dlq = filled
    bs = broker.bootstrap_servers
    names = topic_names("missing", "x")
    missing, x = names["missing"], names["x"]
    broker.create_topics({x: 1})
    assert (
        main(
            replay_cli(broker, "--dlq-topic", t["dlq"], "--reason", "missing_user_id", "--to-topic", missing)
        )
        == 2
    )
    assert f"target topic(s) do not exist: {missing!r}" in capsys.readouterr().err

    assert (
        main(replay_cli(broker, "--dlq-topic", t["dlq"], "--reason", "missing_user_id", "--to-topic", x)) == 0
    )
    out = capsys.readouterr().out
    assert "selected:   2" in out and "replayed:   2" in out and "failures:   0" in out
    assert f"  {x}  missing_user_id  2" in out

    want = []
    for rec in dlq:
        if header_text(rec.headers, "dlq.reason") == "missing_user_id":
            kept = own_headers(rec.headers)
            trace = (REPLAYED_FROM, f"{t['dlq']}/0/{rec.offset}".encode())
            want.append((rec.key, rec.value, [*kept, trace], int(header_text(rec.headers, "dlq.timestamp"))))
    got = [(r.key, r.value, r.headers, r.timestamp_ms) for r in read_all(bs, x)]
    assert sorted(got, key=repr) == sorted(want, key=repr)
    # ... and those are exactly the two original missing_user_id clicks, with their original timestamps.
    assert Counter((k, v, tuple(h[:-1]), ts) for k, v, h, ts in got) == Counter(
        (key, value, tuple(headers), T0 + i)
        for i, (_, key, value, headers, reason) in enumerate(INPUT)
        if reason == "missing_user_id"
    )
    assert all(not k.startswith("dlq.") or k == REPLAYED_FROM for _, _, h, _ in got for k, _ in h)


@pytest_broker
def test_replay_to_source_then_rerun_dead_letters_the_same_records_again(broker, filled, topic_names):
    t, dlq = filled
    bs = broker.bootstrap_servers
    clicks_before = len(read_all(bs, t["clicks"]))
    # As a user would run it: the module, env for the connection and the DLQ topic.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": bs,
        "DLQ_TOPIC": t["dlq"],
    }
    proc = subprocess.run(
        [sys.executable, "-m", "clickstream.dlq_replay"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "replayed:   7" in proc.stdout and "failures:   0" in proc.stdout

    # The clicks topic now holds the originals plus a copy of each bad one (the tombstone as null).
    clicks = read_all(bs, t["clicks"])
    assert len(clicks) == clicks_before + 7 == len(INPUT) + 7
    replayed = [r for r in clicks if header_text(r.headers, REPLAYED_FROM)]
    assert sorted(header_text(r.headers, REPLAYED_FROM) for r in replayed) == sorted(
        f"{t['dlq']}/0/{r.offset}" for r in dlq
    )
    assert any(r.key == b"u9" and r.value is None for r in replayed)

    # Second run over the whole clicks topic, into fresh outputs.
    again = topic_names("joined", "unmatched", "dlq")
    broker.create_topics({again["joined"]: 1, again["unmatched"]: 1, again["dlq"]: 1})
    run_clicks_job(broker, {**t, "joined": again["joined"], "unmatched": again["unmatched"]}, again["dlq"])
    dlq2 = read_all(bs, again["dlq"])
    assert len(dlq2) == 14
    # The originals again, and the replayed copies: same bytes, keys, headers and reasons.
    first = [r for r in dlq2 if header_text(r.headers, REPLAYED_FROM) is None]
    second = [r for r in dlq2 if header_text(r.headers, REPLAYED_FROM) is not None]
    assert originals(first) == expected_dead(INPUT)
    assert originals(second) == expected_dead(INPUT)  # originals() drops dlq.* incl. the trace
    # Each replayed dead letter points back to a dead letter of the first run with the same record.
    first_run = {f"{t['dlq']}/0/{r.offset}": (r.key, r.value) for r in dlq}
    assert len(second) == 7 and len(set(header_text(r.headers, REPLAYED_FROM) for r in second)) == 7
    assert all(first_run[header_text(r.headers, REPLAYED_FROM)] == (r.key, r.value) for r in second)
    # The good clicks are joined exactly once, as in the first run.
    assert Counter(r.value for r in read_all(bs, again["joined"])) == Counter(
        r.value for r in read_all(bs, t["joined"])
    )


@pytest_broker
def test_a_missing_dlq_topic_exits_2(broker, topic_names):
    missing = topic_names("dlq")["dlq"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "clickstream.dlq_replay",
            "--bootstrap-servers",
            broker.bootstrap_servers,
            "--dlq-topic",
            missing,
            "--dry-run",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: topic {missing!r} does not exist"
