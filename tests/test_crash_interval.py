"""The interval join killed with kill -9 while clicks stream in: every pair (and
every unmatched click) is written exactly once, whatever the restarts.

Live data: clicks carry the wall clock of their production as event time,
profile versions are spread around the run, so nothing is late. The expected
lineage ids are computed from the two topics read back: each click with each
version of its user in [T - 60 s, T + 5 s], or the click alone.
"""

from __future__ import annotations

import random
import signal
import threading
import time

import orjson
import pytest
from confluent_kafka import Producer

from clickstream.read_topic import read_all
from test_crash_recovery import KILLS, SEED, base_env, kill, kill_and_restart, lineages, wait_for

pytestmark = pytest.mark.broker

BEFORE_S, AFTER_S = 60, 5
#: Lateness must cover the produce -> job delay (clicks carry their send time).
LATENESS_S = 10
USERS = 40


def produce_live_clicks(bootstrap: str, topic: str, count: int, seconds: float, rng: random.Random):
    """``count`` clicks spread over ``seconds``, each stamped with the time it is sent."""

    def run():
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        chunk = max(1, count // 50)
        for n in range(0, count, chunk):
            for i in range(n, min(count, n + chunk)):
                # a few users have no profile: their clicks come out alone
                body = {"user_id": f"u{rng.randrange(USERS + 4)}", "ts": int(time.time() * 1000), "n": i}
                producer.produce(topic, orjson.dumps(body), body["user_id"].encode())
            producer.flush()
            time.sleep(seconds / 50)
        assert producer.flush(30) == 0

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def expected_lineages(bootstrap: str, clicks_topic: str, profiles_topic: str) -> set:
    versions: dict = {}
    for rec in read_all(bootstrap, profiles_topic, timeout_s=60):
        body = orjson.loads(rec.value)
        versions.setdefault(body["user_id"], []).append(
            (body["updated_at"], f"{profiles_topic}/{rec.partition}/{rec.offset}")
        )
    out = set()
    for rec in read_all(bootstrap, clicks_topic, timeout_s=60):
        body = orjson.loads(rec.value)
        click = f"{clicks_topic}/{rec.partition}/{rec.offset}"
        t = body["ts"]
        matches = [
            coords
            for v, coords in versions.get(body["user_id"], [])
            if t - BEFORE_S * 1000 <= v <= t + AFTER_S * 1000
        ]
        out |= {f"{click}|{m}".encode() for m in matches} or {click.encode()}
    return out


def test_interval_join_killed_repeatedly_writes_each_pair_exactly_once(broker, topic_names, tmp_path):
    rng = random.Random(SEED + 7)
    t = topic_names("clicks", "profiles", "joined", "late", "dlq")
    broker.create_topics({t["clicks"]: 3, t["profiles"]: 2, t["joined"]: 2, t["late"]: 1, t["dlq"]: 1})
    run_s = KILLS * 2.0 + 4
    now = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    times = sorted(now - 90_000 + rng.randrange(int(run_s * 1000) + 120_000) for _ in range(400))
    for v, at in enumerate(times):  # in time order per partition: none late
        body = {"user_id": f"u{rng.randrange(USERS)}", "updated_at": at, "v": v}
        producer.produce(t["profiles"], orjson.dumps(body), body["user_id"].encode(), partition=v % 2)
    assert producer.flush(30) == 0
    producing = produce_live_clicks(broker.bootstrap_servers, t["clicks"], 3000, KILLS * 2.0, rng)

    env = {
        **base_env(broker),
        "CLICKS_TOPIC": t["clicks"],
        "PROFILES_TOPIC": t["profiles"],
        "JOINED_TOPIC": t["joined"],
        "LATE_TOPIC": t["late"],
        "DLQ_TOPIC": t["dlq"],
        "JOIN_STRATEGY": "interval",
        "INTERVAL_BEFORE_SECONDS": str(BEFORE_S),
        "INTERVAL_AFTER_SECONDS": str(AFTER_S),
        "PROFILE_WAIT_SECONDS": "120",
        "ALLOWED_LATENESS_SECONDS": str(LATENESS_S),
    }
    recovery, log = tmp_path / "recovery", tmp_path / "job.log"
    proc = kill_and_restart("clicks", env, recovery, log, KILLS, rng)
    try:
        producing.join(timeout=600)
        expected = expected_lineages(broker.bootstrap_servers, t["clicks"], t["profiles"])
        # a click's pairs come at once; an unmatched click once the profiles
        # watermark (the wall clock: caught up) passes T + 5 s + 10 s lateness
        wait_for(
            lambda: sum(lineages(broker.bootstrap_servers, t["joined"]).values()) >= len(expected),
            300,
            "every pair and unmatched click",
        )
        time.sleep(2)  # anything extra (a duplicate) would have arrived by now
        joined = lineages(broker.bootstrap_servers, t["joined"])
    finally:
        kill(proc, signal.SIGTERM)
    assert {k: n for k, n in joined.items() if n > 1} == {}, f"seed {SEED}: pairs written twice"
    assert set(joined) == expected, f"seed {SEED}"
    pairs = sum(1 for k in expected if b"|" in k)
    assert pairs > 1000 and len(expected) - pairs > 0  # pairs, several per click, and lone clicks
    assert read_all(broker.bootstrap_servers, t["late"]) == []
    assert "Traceback" not in log.read_text().replace("KeyboardInterrupt", "")
