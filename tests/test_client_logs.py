"""An unreachable broker is one clear line; librdkafka's repeats are rate-limited."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from clickstream.broker import free_port
from conftest import ROOT, job_command
from connectors.client_logs import RateLimitedLog, unreachable_reason


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_kind_of_line_is_logged_at_most_once_per_interval_with_the_count_suppressed(caplog):
    clock = Clock()
    limiter = RateLimitedLog(logging.getLogger("test.client_logs"), interval_s=30, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.client_logs"):
        assert limiter.emit("a", logging.ERROR, "first")
        for _ in range(5):
            clock.now += 5
            assert not limiter.emit("a", logging.ERROR, "again")
        assert limiter.emit("b", logging.WARNING, "another kind")
        clock.now = 30
        assert limiter.emit("a", logging.ERROR, "later")
    assert [r.getMessage() for r in caplog.records] == [
        "first",
        "another kind",
        "later [5 similar line(s) suppressed since the last one]",
    ]


def test_the_reason_is_the_useful_part_of_librdkafka_s_text():
    text = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)"
    assert unreachable_reason(text) == "Connection refused"
    assert unreachable_reason("1/1 brokers are down") == "1/1 brokers are down"


def test_a_job_started_against_a_closed_port_says_so_in_one_line_not_hundreds(tmp_path):
    """Before: ~300 librdkafka ``FAIL`` lines in the 10 s the topic lookup waits."""
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": closed,
        "KAFKA_SASL_PASSWORD": "s3cret-never-logged",
        "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
    }
    done = subprocess.run(job_command("clicks"), env=env, capture_output=True, text=True, timeout=120)
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode != 0
    clear = [
        line for line in lines if f"cannot reach Kafka at {closed}: Connection refused (retrying)" in line
    ]
    assert len(clear) == 1, "\n".join(lines[-40:])
    assert [line for line in lines if line.startswith("%")] == []  # librdkafka's own stderr lines
    assert [line for line in lines if "librdkafka" in line] == []
    assert any(f"cannot list partitions of topic 'user_clicks' at {closed}" in line for line in lines)
    assert not any("s3cret-never-logged" in line for line in lines)
    print(f"{len(lines)} lines in all (was ~310); python {sys.version_info[:2]}")
