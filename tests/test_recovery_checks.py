"""Recovery directory faults: a read-only directory, too little free space, a
corrupt ``part-N.sqlite3`` each stop the launcher at once with one line
(status 2); a disk that fills while the job runs ends it once, not in a loop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from clickstream import launch
from clickstream.broker import free_port
from clickstream.recovery_checks import (
    RecoveryDirFault,
    check_free_space,
    check_recovery_dir,
)
from conftest import ROOT, job_command
from connectors.kafka_io import PRODUCER_DEFAULTS
from test_health import wait_for_health
from test_launch import plan


def new_store(directory: Path) -> Path:
    """A real one-partition store, made as the launcher makes it."""
    assert launch.init_recovery(plan({"JOB": "clicks", "RECOVERY_DIR": str(directory)})) is True
    return directory / "part-0.sqlite3"


def launcher_errors(env: dict, capsys) -> tuple[int, list[str]]:
    """Run the launcher's main (it returns before ``exec`` on an error)."""
    status = launch.main(["clicks"], {"PATH": os.environ.get("PATH", ""), **env})
    return status, [line for line in capsys.readouterr().err.splitlines() if "error" in line]


def test_a_sound_store_passes_and_a_garbage_partition_file_is_one_line_naming_it(tmp_path, capsys):
    part = new_store(tmp_path / "rec")
    check_recovery_dir(tmp_path / "rec")  # sound: no error
    part.write_bytes(os.urandom(part.stat().st_size))
    status, errors = launcher_errors({"RECOVERY_DIR": str(tmp_path / "rec")}, capsys)
    assert status == 2
    assert errors == [
        f"entrypoint: error: recovery partition {part} is corrupt (file is not a database): "
        "restore the directory from a backup, or reset it (empty it; the job then starts over "
        "from the beginning of its input topics)"
    ]


def test_a_partition_with_a_damaged_page_is_refused(tmp_path):
    part = new_store(tmp_path / "rec")
    data = bytearray(part.read_bytes())
    page = 4096
    assert len(data) >= 3 * page
    data[page : 3 * page] = os.urandom(2 * page)  # b-tree pages, the header intact
    part.write_bytes(bytes(data))
    with pytest.raises(RecoveryDirFault, match=rf"recovery partition {part} is corrupt \(.+\): restore"):
        check_recovery_dir(tmp_path / "rec")


class Stat:
    def __init__(self, free_bytes: int):
        self.f_frsize = 4096
        self.f_bavail = free_bytes // 4096


def test_free_space_below_the_minimum_is_refused_and_zero_turns_the_check_off(tmp_path):
    check_free_space(tmp_path, 64, lambda _: Stat(65 * 1024 * 1024))  # type: ignore[arg-type,return-value]
    with pytest.raises(RecoveryDirFault) as caught:
        check_free_space(tmp_path, 64, lambda _: Stat(10 * 1024 * 1024))  # type: ignore[arg-type,return-value]
    assert str(caught.value) == (
        f"recovery directory {tmp_path} has 10.0 MiB free, less than RECOVERY_MIN_FREE_MB=64: "
        "grow the volume or free space there (never delete part-N.sqlite3 files one by one)"
    )
    check_free_space(tmp_path, 0, lambda _: Stat(0))  # type: ignore[arg-type,return-value]


def in_mount_namespace(setup: str, *args: str) -> list[str]:
    """The launcher's command after ``setup`` (mount commands) in a private
    mount namespace: the mounts vanish with it. Skips where that is not allowed."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount")
    launcher = " ".join(job_command("clicks", *args))
    return ["unshare", "--mount", "sh", "-c", f"{setup} || exit 99; exec {launcher}"]


def run_launcher(command: list[str], env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    if done.returncode == 99:
        pytest.skip(f"mount not allowed here: {done.stderr.strip()}")
    return done


def test_a_read_only_recovery_directory_is_one_line_and_status_2(tmp_path):
    directory = tmp_path / "rec"
    directory.mkdir()
    done = run_launcher(
        in_mount_namespace(f"mount --bind {directory} {directory} && mount -o remount,ro,bind {directory}"),
        {"RECOVERY_DIR": str(directory)},
    )
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert done.returncode == 2, done.stderr
    assert errors == [
        f"entrypoint: error: recovery directory {directory} is not writable (Read-only file system): "
        "mount it read-write and make it writable by the job's user"
    ]


def test_a_small_volume_is_refused_before_the_job_starts(tmp_path):
    directory = tmp_path / "rec"
    directory.mkdir()
    done = run_launcher(
        in_mount_namespace(f"mount -t tmpfs -o size=1m tmpfs {directory}"),
        {"RECOVERY_DIR": str(directory), "RECOVERY_MIN_FREE_MB": "64"},
    )
    assert done.returncode == 2, done.stderr
    assert f"entrypoint: error: recovery directory {directory} has 1.0 MiB free" in done.stderr


def job_env(broker, topic_names, directory: Path, profiles: int) -> dict:
    """Topics for the clicks job, ``profiles`` padded profiles in them, and its environment."""
    t = topic_names("clicks", "profiles", "joined", "dlq")
    broker.create_topics({t["clicks"]: 1, t["profiles"]: 1, t["joined"]: 1, t["dlq"]: 1})
    producer = Producer({**PRODUCER_DEFAULTS, "bootstrap.servers": broker.bootstrap_servers})
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    for u in range(profiles):
        profile = {"user_id": f"u{u}", "updated_at": an_hour_ago, "pad": "x" * 200}
        producer.produce(t["profiles"], orjson.dumps(profile))
    assert producer.flush(60) == 0
    directory.mkdir()
    return {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "CLICKS_TOPIC": t["clicks"],
        "PROFILES_TOPIC": t["profiles"],
        "JOINED_TOPIC": t["joined"],
        "DLQ_TOPIC": t["dlq"],
        "RECOVERY_DIR": str(directory),
        "RECOVERY_SNAPSHOT_SECONDS": "1",
        "RECOVERY_MIN_FREE_MB": "0",  # let it start on a tiny volume
    }


@pytest.mark.broker
def test_a_disk_that_fills_while_the_job_runs_stops_it_once_with_the_reason(broker, topic_names, tmp_path):
    """Measured: Bytewax panics once ("database or disk is full") and exits 1."""
    directory = tmp_path / "rec"
    env = job_env(broker, topic_names, directory, 5000)  # ~1.5 MB of state: more than 400 KiB
    started = time.monotonic()
    done = run_launcher(in_mount_namespace(f"mount -t tmpfs -o size=400k tmpfs {directory}"), env)
    elapsed = time.monotonic() - started
    print(f"the job stopped {elapsed:.1f} s after its start (status {done.returncode})", file=sys.stderr)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.count("database or disk is full") >= 1
    assert done.stderr.count("panicked at") == 1


@pytest.mark.broker
def test_a_directory_that_turns_read_only_while_the_job_runs_stops_it_once(broker, topic_names, tmp_path):
    """An ext4 volume remounted read-only by the kernel after an error (as
    ``errors=remount-ro`` does): Bytewax panics once ("disk I/O error"), exits 1."""
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("needs mkfs.ext4")
    image, device_name = tmp_path / "volume.img", tmp_path / "device"
    with open(image, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    directory = tmp_path / "rec"
    env = {**job_env(broker, topic_names, directory, 100), "METRICS_PORT": str(free_port())}
    setup = (
        f"mount -o loop,errors=remount-ro {image} {directory} && "
        f"basename $(findmnt -n -o SOURCE {directory}) > {device_name}"
    )
    job = subprocess.Popen(
        in_mount_namespace(setup),
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **env},
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        wait_for_health(int(env["METRICS_PORT"]), 200, 60)  # running, snapshots written
        trigger = Path(f"/sys/fs/ext4/{device_name.read_text().strip()}/trigger_fs_error")
        trigger.write_text("test\n")
        started = time.monotonic()
        _, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    print(f"the job stopped {time.monotonic() - started:.1f} s after the volume turned read-only")
    assert job.returncode == 1, stderr[-3000:]
    assert stderr.count("panicked at") == 1 and "disk I/O error" in stderr
