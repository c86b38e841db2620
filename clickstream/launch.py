"""The one launcher: start one Bytewax process of a clickstream job, on a
laptop, in a container or as a pod of a StatefulSet.

    python -m clickstream.launch JOB [--] [extra bytewax.run arguments]
    JOB=clicks python -m clickstream.launch             (the container entrypoint)

It prints what it does (on stderr, ``entrypoint: ...``), creates the recovery
store on first start, prunes a resumed store's uncommitted snapshots, then
replaces itself (``exec``) with::

    python -m bytewax.run dataflows.<JOB> [-i ID -a ADDRS] [-w W] [-r DIR -s S -b B] [extra args]

The jobs are :func:`clickstream.jobs.available_jobs`. Settings (environment,
all optional; every one described in ``docs/deploy.md``):

* topology: ``BYTEWAX_REPLICAS``, ``BYTEWAX_ADDRESSES``, ``BYTEWAX_PROCESS_ID``
  (default: the pod ordinal of ``$HOSTNAME``), ``BYTEWAX_STATEFULSET``,
  ``BYTEWAX_SERVICE``, ``BYTEWAX_PORT`` (2101), ``BYTEWAX_WORKERS_PER_PROCESS``,
  ``BYTEWAX_DNS_WAIT_SECONDS`` (60);
* recovery: ``RECOVERY_DIR`` (unset: no recovery), ``RECOVERY_PARTITIONS`` (1,
  fixed once created), ``RECOVERY_SNAPSHOT_SECONDS`` (10; also the epoch
  length), ``RECOVERY_BACKUP_SECONDS`` (0). Whole seconds: ``bytewax.run``
  takes no fractions, so a fraction is refused. The old names
  ``SNAPSHOT_SECONDS`` / ``BACKUP_SECONDS`` still work for one release, with
  a warning.

Recovery store. Every pod has its own volume, and Bytewax needs the cluster
as a whole to hold each partition exactly once: on first start (no
``part-*.sqlite3`` in ``RECOVERY_DIR``) a process creates only the partitions
it *owns* (a single process: all; in a cluster, process ``i`` owns partition
``i`` if ``i < RECOVERY_PARTITIONS``), with the real ``python -m
bytewax.recovery`` in a scratch directory, moved into place; a marker file
(``.recovery-initialised``) keeps the directory from being initialised twice.
First the directory is checked (:mod:`clickstream.recovery_checks`): writable,
``RECOVERY_MIN_FREE_MB`` free, every ``part-N.sqlite3`` sound.

Nothing here prints an environment value other than the topology and
recovery settings, so secrets never reach the log. A bad configuration exits
with status 2 and one line saying why.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from clickstream.jobs import available_jobs
from clickstream.launch_config import (
    UNUSED_BYTEWAX_VARS,
    LaunchError,
    Plan,
    describe,
    job_environment,
    owned_partitions,
    parse_ordinal,
    peer_addresses,
    plan_from_env,
    statefulset_name,
)
from clickstream.recovery_checks import RecoveryDirFault, check_recovery_dir
from clickstream.recovery_store import IncompleteStore, prune_uncommitted_snapshots

__all__ = [
    "LaunchError",
    "Plan",
    "available_jobs",
    "describe",
    "init_recovery",
    "job_environment",
    "launcher_command",
    "main",
    "owned_partitions",
    "parse_ordinal",
    "peer_addresses",
    "plan_from_env",
    "prune_store",
    "statefulset_name",
    "wait_for_dns",
]

_PART = re.compile(r"^part-(?P<index>[0-9]+)\.sqlite3$")
#: Left in a recovery directory once this process has created its partitions
#: there. If they are later moved to another pod's volume (to scale below
#: RECOVERY_PARTITIONS), it stops the pod from creating them again, empty,
#: when it comes back: an empty duplicate would make Bytewax start over.
MARKER = ".recovery-initialised"


def log(message: str) -> None:
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)


def existing_partitions(directory: Path) -> list[int]:
    """Indexes of the ``part-N.sqlite3`` files in ``directory``."""
    if not directory.is_dir():
        return []
    found = (_PART.match(p.name) for p in directory.iterdir())
    return sorted(int(m.group("index")) for m in found if m)


def store_partition_count(directory: Path, index: int) -> int | None:
    """The partition count recorded in an existing partition file, if readable.

    Opened immutable: nothing is written, no -wal/-shm file is created. The
    count is written when the partition is created, so the main file has it.
    """
    try:
        uri = f"file:{directory / f'part-{index}.sqlite3'}?immutable=1"
        with sqlite3.connect(uri, uri=True, timeout=1) as db:
            row = db.execute("SELECT part_count FROM parts LIMIT 1").fetchone()
        return int(row[0]) if row else None
    except sqlite3.Error:
        return None


def prune_store(directory: Path) -> str:
    """Drop the snapshots a killed execution left beyond the resume epoch (see
    :mod:`clickstream.recovery_store`); returns a line for the log. Needs every
    partition of the store here: true for the default single-partition store
    (pod 0 holds it); with partitions spread over pods it is skipped with a
    warning."""
    try:
        epoch, deleted = prune_uncommitted_snapshots(directory)
    except IncompleteStore as exc:
        return f"warning: uncommitted snapshots not pruned: {exc}"
    return f"resuming at epoch {epoch}; pruned {deleted} uncommitted snapshot(s)"


def init_recovery(plan: Plan, python: str = sys.executable) -> bool:
    """Create this process's recovery partitions on first start; prune a
    resumed store.

    Returns True when it created the store's files here, False when the
    directory already had partitions, was initialised before (the marker
    file), or this process owns none.
    """
    directory = plan.recovery_dir
    assert directory is not None
    directory.mkdir(parents=True, exist_ok=True)
    present = existing_partitions(directory)
    if present:
        count = store_partition_count(directory, present[0])
        log(f"recovery: resuming from {directory} (partitions {present} of {count or '?'} here)")
        log("recovery: " + prune_store(directory))
        if count is not None and count != plan.recovery_partitions:
            log(
                f"recovery: note: the store has {count} partitions; RECOVERY_PARTITIONS="
                f"{plan.recovery_partitions} only applies to a new store"
            )
        return False
    if (directory / MARKER).exists():
        log(
            f"recovery: {directory} was initialised before and has no partition now "
            f"(moved away?): not creating any (delete {MARKER} to start a new store)"
        )
        return False
    owned = plan.owned_partitions
    if not owned:
        log(
            f"recovery: process {plan.process_id} owns no partition of a "
            f"{plan.recovery_partitions}-partition store; {directory} stays empty"
        )
        return False
    for stale in directory.glob(".init-*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = directory / f".init-{os.getpid()}"
    command = [python, "-m", "bytewax.recovery", str(scratch), str(plan.recovery_partitions)]
    log("recovery: new store: " + shlex.join(command) + f", keeping partitions {owned} here")
    try:
        scratch.mkdir()
        subprocess.run(command, check=True)
        for index in owned:
            name = f"part-{index}.sqlite3"
            os.replace(scratch / name, directory / name)
        (directory / MARKER).write_text(
            f"created partitions {owned} of a {plan.recovery_partitions}-partition store\n"
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise LaunchError(f"could not initialise the recovery store in {directory}: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return True


def wait_for_dns(
    host: str,
    timeout_s: float,
    resolve: Callable[[str], object] = socket.gethostbyname,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Wait until ``host`` resolves (a new pod's DNS record can lag its start)."""
    deadline = clock() + timeout_s
    warned = False
    while True:
        try:
            resolve(host)
            return True
        except OSError:
            if clock() >= deadline:
                log(f"{host} does not resolve after {timeout_s:g} s; starting anyway")
                return False
            if not warned:
                log(f"waiting for {host} to resolve")
                warned = True
            sleep(0.5)


def launcher_command(job: str, *bytewax_args: str) -> list[str]:
    """The command that starts ``job`` through this launcher (the demo and the
    tests use it; settings come from the environment)."""
    return [sys.executable, "-m", "clickstream.launch", job, "--", *bytewax_args]


def prepare(env: Mapping[str, str], argv: Sequence[str]) -> list[str]:
    """Everything before the ``exec``: plan, log, wait, recovery store. Returns
    the command; raises LaunchError."""
    plan = plan_from_env(env, argv)
    log(describe(plan))
    for warning in plan.warnings:
        log(warning)
    for name, instead in UNUSED_BYTEWAX_VARS.items():
        if name in env:
            log(f"ignoring {name} (use {instead})")
    if plan.clustered and plan.dns_wait_seconds > 0:
        assert plan.process_id is not None  # a cluster plan always has one (checked by _cluster)
        own_host = plan.addresses[plan.process_id].rpartition(":")[0]
        wait_for_dns(own_host, plan.dns_wait_seconds)
    if plan.recovery_dir is not None:
        try:
            check_recovery_dir(plan.recovery_dir, plan.recovery_min_free_mb)
        except RecoveryDirFault as exc:
            raise LaunchError(str(exc)) from None
        init_recovery(plan)
        check_store_layout(plan, env)
    return [sys.executable, *plan.bytewax_args()]


def check_store_layout(plan: Plan, env: Mapping[str, str]) -> None:
    """Refuse a store written with settings that shape state or outputs
    differently (see :mod:`clickstream.store_layout`)."""
    from clickstream.store_layout import LayoutChanged, check_layout, current_layout
    from connectors.kafka_io import KafkaIOError

    assert plan.recovery_dir is not None
    try:
        layout = current_layout(plan.job, env, plan.recovery_partitions)
    except KafkaIOError as exc:
        log(f"recovery: warning: store layout not checked (Kafka unreachable: {exc})")
        return
    try:
        if check_layout(plan.recovery_dir, layout):
            log(f"recovery: layout written to {plan.recovery_dir}/layout.json")
    except LayoutChanged as exc:
        raise LaunchError(str(exc)) from None


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    argv = sys.argv[1:] if argv is None else argv
    try:
        command = prepare(env, argv)
    except LaunchError as exc:
        log(f"error: {exc}")
        return 2
    log("exec " + shlex.join(command))
    sys.stdout.flush()
    os.execve(command[0], command, job_environment(env))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
