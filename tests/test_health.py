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
    watch.open_partition(("clicks", 0), now=clock.now)
    watch.set_reading(("clicks", 0), False)  # caught up
    lines: list[str] = []
    logger = logging.getLogger(f"test.health.{id(lines)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(Lines(lines))
    return StallMonitor(stall_s, watch, clock, logger), watch, clock, lines


def test_stalled_only_when_input_is_pending_and_no_epoch_completed_for_the_limit():
    monitor, watch, clock, lines = monitor_at(stall_s=10)
    clock.now += 100  # no epoch for 100 s, nothing read, polled just now: idle, healthy
    watch.polled_at = clock.now
    assert monitor.check() is None
    watch.epoch_at = watch.polled_at = clock.now  # an epoch completes
    watch.input_at = watch.polled_at = clock.now + 0.1
    clock.now += 9.9
    assert monitor.check() is None
    clock.now += 0.2
    reason = monitor.check()
    assert reason == (
        "stalled: input pending and no epoch completed for 10 s: records read since the last epoch "
        "(HEALTH_STALL_SECONDS=10)"
    )
    clock.now += 30
    assert monitor.check() is not None
    watch.epoch_at = clock.now
    assert monitor.check() is None
    assert lines == [
        "WARNING stalled: input pending and no epoch completed for 10 s: records read since the last "
        "epoch (HEALTH_STALL_SECONDS=10)",
        "INFO progressing again: an epoch completed 0 s ago",
    ]


def test_a_partition_behind_its_end_is_pending_input_until_it_catches_up():
    monitor, watch, clock, lines = monitor_at(stall_s=5)
    watch.set_reading(("clicks", 0), True)
    clock.now += 4
    watch.polled_at = clock.now
    assert monitor.check() is None
    clock.now += 2
    watch.polled_at = clock.now
    assert monitor.check() is not None
    watch.set_reading(("clicks", 0), False)  # caught up, and nothing read since the epoch
    assert monitor.check() is None
    assert [line.split()[0] for line in lines] == ["WARNING", "INFO"]


def test_sources_not_polled_count_as_pending_input_and_no_partition_means_no_signal():
    monitor, watch, clock, _ = monitor_at(stall_s=5)  # caught up, idle
    clock.now += 4.9
    assert monitor.check() is None
    clock.now += 0.2  # neither polled nor snapshotted for 5.1 s: a gated worker
    assert monitor.check() is not None
    watch.polled_at = clock.now  # polled again, still no epoch: idle and caught up
    assert monitor.check() is None
    watch.close_partition(("clicks", 0))
    clock.now += 100
    assert monitor.check() is None  # this process reads no partition: nothing to judge by


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
    print(
        f"503 {stalled_after:.1f} s after SIGSTOP (limit 2 s): {body}; 200 {recovered_after:.1f} s after SIGCONT"
    )
    assert body is not None and body[1].startswith("stalled: input pending and no epoch completed for")
    assert text.count("WARNING clickstream.health: stalled: input pending") == 1, text[-3000:]
    assert text.count("INFO clickstream.health: progressing again") == 1, text[-3000:]


def records_in(port: int, topic: str | None = None) -> float:
    """``clickstream_records_in_total`` of one process (one topic, or all)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    prefix = "clickstream_records_in_total" + ("" if topic is None else f'{{topic="{topic}"}}')
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


@pytest.mark.broker
def test_a_stopped_peer_process_fails_the_other_process_s_healthz(broker, topic_names, tmp_path):
    """The issue's probe: one of two processes stopped (SIGSTOP); the other,
    idle and caught up, answered 200 with no log line. Now it stalls visibly."""
    t = topic_names("clicks", "profiles", "joined", "dlq")
    broker.create_topics({t["clicks"]: 2, t["profiles"]: 2, t["joined"]: 2, t["dlq"]: 1})
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    t0 = int(time.time() * 1000) - 3_600_000
    for i in range(200):
        producer.produce(
            t["profiles"], orjson.dumps({"user_id": f"u{i}", "updated_at": t0}), f"u{i}".encode()
        )
        producer.produce(t["clicks"], orjson.dumps({"user_id": f"u{i}", "ts": t0 + 1}), f"u{i}".encode())
    assert producer.flush(30) == 0
    ports = [free_port(), free_port()]
    common = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "BYTEWAX_ADDRESSES": f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}",
        "RECOVERY_PARTITIONS": "2",
        "RECOVERY_SNAPSHOT_SECONDS": "1",
        "HEALTH_STALL_SECONDS": "4",
        "CLICKS_TOPIC": t["clicks"],
        "PROFILES_TOPIC": t["profiles"],
        "JOINED_TOPIC": t["joined"],
        "DLQ_TOPIC": t["dlq"],
    }
    logs = [tmp_path / f"clicks-{i}.log" for i in range(2)]
    procs = [
        subprocess.Popen(
            job_command("clicks"),
            env={
                **common,
                "HOSTNAME": f"clicks-{i}",
                "METRICS_PORT": str(ports[i]),
                "RECOVERY_DIR": str(tmp_path / f"rec-{i}"),
            },
            stdout=open(logs[i], "wb"),  # noqa: SIM115 - the job writes it for its whole life
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for i in range(2)
    ]
    try:
        start = time.monotonic()
        while records_in(ports[0]) + records_in(ports[1]) < 400:  # every record read: caught up
            assert time.monotonic() - start < 90, logs[0].read_text()[-2000:]
            time.sleep(0.2)
        wait_for_health(ports[0], 200, 30)
        os.kill(procs[1].pid, signal.SIGSTOP)
        try:
            stalled_after = wait_for_health(ports[0], 503, 60)
            reason = healthz(ports[0])
        finally:
            os.kill(procs[1].pid, signal.SIGCONT)
        recovered_after = wait_for_health(ports[0], 200, 60)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
    print(f"peer stopped: 503 after {stalled_after:.1f} s (limit 4 s), {reason}")
    print(f"200 again {recovered_after:.1f} s after SIGCONT")
    assert reason is not None and reason[1].startswith("stalled: input pending and no epoch completed")
    text = logs[0].read_text()
    assert text.count("WARNING clickstream.health: stalled") == 1, text[-3000:]
    assert text.count("INFO clickstream.health: progressing again") == 1, text[-3000:]
