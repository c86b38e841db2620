"""Health that means progress: the stall rule, ``/healthz``, and a real stall."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import orjson
import pytest
from confluent_kafka import Producer

from clickstream.broker import LocalBroker, free_port
from conftest import ROOT, job_command
from connectors.kafka_io import PRODUCER_DEFAULTS
from dataflows.runtime import health_and_metrics_app
from operators.health import ProgressWatch, StallMonitor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def monitor_at(stall_s: float = 10.0) -> tuple[StallMonitor, ProgressWatch, Clock, list[str]]:
    clock = Clock()
    watch = ProgressWatch(now=clock.now)
    lines: list[str] = []
    logger = logging.getLogger(f"test.health.{id(lines)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(Lines(lines))
    return StallMonitor(stall_s, watch, clock, logger), watch, clock, lines


def test_stalled_only_when_input_is_pending_and_no_epoch_completed_for_the_limit():
    monitor, watch, clock, lines = monitor_at(stall_s=10)
    clock.now += 100  # no epoch for 100 s, but nothing read: idle, healthy
    assert monitor.check() is None
    watch.epoch_at = clock.now  # an epoch completes
    watch.input_at = clock.now + 0.1
    clock.now += 9.9
    assert monitor.check() is None
    clock.now += 0.2
    reason = monitor.check()
    assert reason == "stalled: input pending and no epoch completed for 10 s (HEALTH_STALL_SECONDS=10)"
    clock.now += 30
    assert monitor.check() is not None
    watch.epoch_at = clock.now
    assert monitor.check() is None
    assert lines == [
        "WARNING stalled: input pending and no epoch completed for 10 s (HEALTH_STALL_SECONDS=10)",
        "INFO progressing again: an epoch completed 0 s ago",
    ]


def test_a_partition_behind_its_end_is_pending_input_until_it_catches_up():
    monitor, watch, clock, lines = monitor_at(stall_s=5)
    watch.set_reading(("clicks", 0), True)
    clock.now += 4
    assert monitor.check() is None
    clock.now += 2
    assert monitor.check() is not None
    watch.set_reading(("clicks", 0), False)  # caught up, and nothing read since the epoch
    assert monitor.check() is None
    assert [line.split()[0] for line in lines] == ["WARNING", "INFO"]


def call(app, path: str) -> tuple[str, bytes]:
    seen: list[str] = []
    body = b"".join(
        app({"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""}, lambda s, h: seen.append(s))
    )
    return seen[0], body


def test_healthz_answers_ok_or_503_with_the_reason_and_other_paths_serve_metrics():
    monitor, watch, clock, _ = monitor_at(stall_s=5)
    app = health_and_metrics_app(monitor)
    assert call(app, "/healthz") == ("200 OK", b"ok\n")
    watch.input_at = clock.now + 1
    clock.now += 6
    status, body = call(app, "/healthz")
    assert status.startswith("503") and body.startswith(b"stalled: input pending")
    status, body = call(app, "/metrics")
    assert status.startswith("200") and b"python_info" in body


def healthz(port: int) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None


def wait_for_health(port: int, code: int, timeout_s: float) -> float:
    """Seconds until ``/healthz`` answers ``code`` (fails after ``timeout_s``)."""
    start = time.monotonic()
    while (answer := healthz(port)) is None or answer[0] != code:
        assert time.monotonic() - start < timeout_s, f"/healthz never answered {code}: {answer}"
        time.sleep(0.2)
    return time.monotonic() - start


@pytest.mark.broker
def test_healthz_is_ok_while_tailing_and_503_while_the_broker_is_stopped_with_input_pending(tmp_path):
    """A broker of its own (stopped with SIGSTOP mid-input): the job's sink
    blocks in its flush, no epoch completes, ``/healthz`` turns 503 with one
    WARNING line, then 200 again after SIGCONT."""
    clicks = 100_000
    with LocalBroker.start() as broker:
        broker.create_topics({"clicks": 2, "profiles": 1, "joined": 2, "dlq": 1})
        producer = Producer({**PRODUCER_DEFAULTS, "bootstrap.servers": broker.bootstrap_servers})
        t0 = int(time.time() * 1000) - 3_600_000
        producer.produce("profiles", orjson.dumps({"user_id": "u0", "updated_at": t0}))
        for i in range(clicks):
            producer.produce("clicks", orjson.dumps({"user_id": f"u{i % 10}", "ts": t0 + i}))
        assert producer.flush(60) == 0
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "METRICS_PORT": str(port),
            "HEALTH_STALL_SECONDS": "2",
            "PROGRESS_INTERVAL_SECONDS": "0",
            "CLICKS_TOPIC": "clicks",
            "PROFILES_TOPIC": "profiles",
            "JOINED_TOPIC": "joined",
            "DLQ_TOPIC": "dlq",
        }
        log = tmp_path / "job.log"
        job = subprocess.Popen(
            job_command("clicks", "-s", "1"),
            env=env,
            stdout=open(log, "wb"),  # noqa: SIM115 - the job writes it for its whole life
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_health(port, 200, 60)
            start = time.monotonic()
            while not (0 < records_in(port) < clicks):  # stop the broker while input is pending
                assert time.monotonic() - start < 60 and job.poll() is None, log.read_text()[-2000:]
                time.sleep(0.05)
            broker.pause()
            try:
                stalled_after = wait_for_health(port, 503, 30)
                body = healthz(port)
            finally:
                broker.resume()
            recovered_after = wait_for_health(port, 200, 60)
        finally:
            os.killpg(job.pid, signal.SIGTERM)
            job.wait(timeout=20)
    text = log.read_text()
    print(f"503 {stalled_after:.1f} s after SIGSTOP (limit 2 s); 200 {recovered_after:.1f} s after SIGCONT")
    assert body is not None and body[1].startswith("stalled: input pending and no epoch completed for")
    assert text.count("WARNING clickstream.health: stalled: input pending") == 1, text[-3000:]
    assert text.count("INFO clickstream.health: progressing again") == 1, text[-3000:]


def records_in(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('clickstream_records_in_total{topic="clicks"}')
    )
