"""The README's "Use the operators in your own dataflow" block, run as written
against the real broker: clicks in their own shape joined with profiles keyed
by the message key, every click enriched once, bad records dead-lettered."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from clickstream.read_topic import read_all
from conftest import ROOT

pytestmark = pytest.mark.broker

T0 = 1_767_225_600_000


def readme_dataflow() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use the operators in your own dataflow", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_dataflow_runs_as_written(broker, tmp_path):
    # the block names its topics literally; no other test uses these names
    broker.create_topics({"user_clicks": 2, "user_profiles": 1, "enriched": 1, "dead_letters": 1})
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    versions = {"7": [(T0, "free"), (T0 + 60_000, "gold")], "8": [(T0, "pro")]}
    for user, history in versions.items():
        for at, tier in history:
            iso = f"2026-01-01T00:{at // 60_000 - T0 // 60_000:02d}:00Z"
            producer.produce("user_profiles", orjson.dumps({"modified": iso, "tier": tier}), user.encode())
    clicks = [(7, 30.0), (7, 90.5), (8, 10.25), (9, 5.0)]  # user 9 has no profile
    for n, (user, after_s) in enumerate(clicks):
        body = {"user": {"id": user}, "event_time": (T0 / 1000) + after_s, "n": n}
        producer.produce("user_clicks", orjson.dumps(body), partition=n % 2)
    producer.produce("user_clicks", b'{"user": {}, "event_time": 1767225600}')
    assert producer.flush(30) == 0

    (tmp_path / "my_enrichment.py").write_text(readme_dataflow())
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "my_enrichment"],
        env={
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": f"{tmp_path}:{ROOT}",
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    got = Counter()
    for rec in read_all(broker.bootstrap_servers, "enriched"):
        body = orjson.loads(rec.value)
        got[(rec.key, body["click"]["n"], body["profile"] and body["profile"]["tier"])] += 1
    assert got == Counter(
        {(b"7", 0, "free"): 1, (b"7", 1, "gold"): 1, (b"8", 2, "pro"): 1, (b"9", 3, None): 1}
    )
    dead = [
        (dict(r.headers)["dlq.reason"], r.value) for r in read_all(broker.bootstrap_servers, "dead_letters")
    ]
    assert dead == [(b"missing_user_id", b'{"user": {}, "event_time": 1767225600}')]
