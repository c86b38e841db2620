"""Start one Bytewax process of a clickstream job, as a container or a pod.

``deploy/entrypoint.sh`` runs this file; it replaces itself (``exec``) with::

    python -m bytewax.run dataflows.<JOB> [-i ID -a ADDRS] [-w W] [-r DIR -s S -b B] [extra args]

Usage: ``entrypoint.sh [JOB] [extra bytewax.run arguments]``. The job is the
first argument, or ``$JOB``: a module of ``dataflows`` (clicks, top_users,
alerts, sessions).

Environment (all optional):

=============================  ==========================================================
``BYTEWAX_REPLICAS``           processes in the cluster (the StatefulSet's replicas)
``BYTEWAX_ADDRESSES``          explicit ``host:port;host:port``, one per process, in
                               process-id order (overrides the computed list)
``BYTEWAX_PROCESS_ID``         this process's id (default: the pod ordinal of
                               ``$HOSTNAME``, ``clicks-2`` -> 2)
``BYTEWAX_STATEFULSET``        default: ``$HOSTNAME`` without its ``-<ordinal>``
``BYTEWAX_SERVICE``            headless service name (default: the StatefulSet name)
``BYTEWAX_PORT``               Bytewax cluster port (default 2101)
``BYTEWAX_WORKERS_PER_PROCESS``  ``-w`` (worker threads per process)
``BYTEWAX_DNS_WAIT_SECONDS``   how long to wait for this pod's own DNS name (default 60)
``RECOVERY_DIR``               recovery store directory; unset: no recovery
``RECOVERY_PARTITIONS``        partitions of a new store (default 1; fixed afterwards)
``RECOVERY_SNAPSHOT_SECONDS``  ``-s``, snapshot interval and epoch length (default 10)
``RECOVERY_BACKUP_SECONDS``    ``-b``, extra snapshot retention (default 0)
=============================  ==========================================================

Topology. Without ``BYTEWAX_REPLICAS`` / ``BYTEWAX_ADDRESSES`` (or with one
process) the job runs as a single process and the hostname is ignored. With
several, process ``i`` of StatefulSet ``S`` behind headless service ``V`` is
``S-i.V:PORT``, and every process gets the same list.

Recovery store. Every pod has its own volume (ReadWriteOnce). Bytewax needs
the cluster *as a whole* to hold each partition exactly once: if every pod
created the full set, a later rescale could make Bytewax read a pod's empty
copy and silently restart the job from the beginning. So on first start (no
``part-*.sqlite3`` in ``RECOVERY_DIR``) a process creates the partitions it
*owns* and only those: the single process owns them all; in a cluster,
process ``i`` owns partition ``i`` if ``i < RECOVERY_PARTITIONS``, and
``RECOVERY_PARTITIONS`` may not exceed the number of processes. Processes
added later own nothing (their directory stays empty, which Bytewax allows).
They are created with the real ``python -m bytewax.recovery DIR N`` in a
temporary directory, and the owned files are moved into place atomically; a
marker file (``.recovery-initialised``) then keeps the directory from being
initialised a second time, even if its partitions are moved elsewhere.

Nothing here prints an environment value other than the topology and
recovery settings above, so secrets (``KAFKA_SASL_PASSWORD`` ...) never reach
the log.
"""

from __future__ import annotations

import os
import pkgutil
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence

DEFAULT_PORT = 2101
DEFAULT_SNAPSHOT_SECONDS = 10
DEFAULT_BACKUP_SECONDS = 0
DEFAULT_DNS_WAIT_SECONDS = 60
#: Variables ``bytewax.run`` reads by itself. They are removed from the job's
#: environment so that the printed command line is the whole truth.
BYTEWAX_RUN_VARS = (
    "BYTEWAX_PROCESS_ID",
    "BYTEWAX_ADDRESSES",
    "BYTEWAX_WORKERS_PER_PROCESS",
    "BYTEWAX_RECOVERY_DIRECTORY",
    "BYTEWAX_SNAPSHOT_INTERVAL",
    "BYTEWAX_RECOVERY_BACKUP_INTERVAL",
    "BYTEWAX_POD_NAME",
    "BYTEWAX_STATEFULSET_NAME",
    "BYTEWAX_HOSTFILE_PATH",
)
#: Of those, the ones this launcher does not use (their replacement).
UNUSED_BYTEWAX_VARS = {
    "BYTEWAX_RECOVERY_DIRECTORY": "RECOVERY_DIR",
    "BYTEWAX_SNAPSHOT_INTERVAL": "RECOVERY_SNAPSHOT_SECONDS",
    "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "RECOVERY_BACKUP_SECONDS",
    "BYTEWAX_POD_NAME": "HOSTNAME",
    "BYTEWAX_STATEFULSET_NAME": "BYTEWAX_STATEFULSET",
    "BYTEWAX_HOSTFILE_PATH": "BYTEWAX_ADDRESSES",
}
#: Modules of the ``dataflows`` package that are not jobs.
NOT_JOBS = frozenset({"common"})

_ORDINAL = re.compile(r"^(?P<name>.+)-(?P<ordinal>0|[1-9][0-9]*)$")
_PART = re.compile(r"^part-(?P<index>[0-9]+)\.sqlite3$")
#: Left in a recovery directory once this process has created its partitions
#: there. If they are later moved to another pod's volume (to scale below
#: RECOVERY_PARTITIONS), it stops the pod from creating them again, empty,
#: when it comes back: an empty duplicate would make Bytewax start over.
MARKER = ".recovery-initialised"


class LaunchError(Exception):
    """The configuration cannot start a process; the message says why."""


def log(message: str) -> None:
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)


# --- pure logic ---------------------------------------------------------------


def parse_ordinal(hostname: str) -> Optional[int]:
    """The StatefulSet pod ordinal in a hostname: ``clicks-2`` -> 2, else None.

    Only a pod name (the first DNS label) counts: ``clicks-2.clicks.ns.svc`` -> 2.
    """
    match = _ORDINAL.match(hostname.split(".", 1)[0])
    return int(match.group("ordinal")) if match else None


def statefulset_name(hostname: str) -> Optional[str]:
    """``clicks-2`` -> ``clicks``; None without an ordinal."""
    match = _ORDINAL.match(hostname.split(".", 1)[0])
    return match.group("name") if match else None


def peer_addresses(statefulset: str, service: str, replicas: int, port: int = DEFAULT_PORT) -> List[str]:
    """``<statefulset>-<i>.<service>:<port>`` for every process, in id order."""
    if replicas < 1:
        raise LaunchError(f"BYTEWAX_REPLICAS must be at least 1 (got {replicas})")
    return [f"{statefulset}-{i}.{service}:{port}" for i in range(replicas)]


def owned_partitions(process_id: Optional[int], processes: int, partitions: int) -> List[int]:
    """The recovery partitions this process creates in its own directory.

    A single process (``process_id`` None) owns all of them; in a cluster,
    process ``i`` owns partition ``i`` (if there is one).
    """
    if partitions < 1:
        raise LaunchError(f"RECOVERY_PARTITIONS must be at least 1 (got {partitions})")
    if process_id is None:
        return list(range(partitions))
    if partitions > processes:
        raise LaunchError(
            f"RECOVERY_PARTITIONS={partitions} is more than the {processes} processes: "
            "each pod keeps its own partition on its own volume, so a new store needs "
            "at least as many processes as partitions (default 1)"
        )
    return [process_id] if process_id < partitions else []


@dataclass(frozen=True)
class Plan:
    """Everything needed to start one process."""

    job: str
    process_id: Optional[int] = None
    addresses: Sequence[str] = ()
    workers: Optional[int] = None
    recovery_dir: Optional[Path] = None
    recovery_partitions: int = 1
    snapshot_seconds: int = DEFAULT_SNAPSHOT_SECONDS
    backup_seconds: int = DEFAULT_BACKUP_SECONDS
    dns_wait_seconds: int = DEFAULT_DNS_WAIT_SECONDS
    extra_args: Sequence[str] = field(default_factory=tuple)

    @property
    def processes(self) -> int:
        return max(1, len(self.addresses))

    @property
    def clustered(self) -> bool:
        return len(self.addresses) > 1

    @property
    def owned_partitions(self) -> List[int]:
        return owned_partitions(self.process_id, self.processes, self.recovery_partitions)

    def bytewax_args(self) -> List[str]:
        """Arguments after ``python``."""
        args = ["-m", "bytewax.run", f"dataflows.{self.job}"]
        if self.clustered:
            args += ["-i", str(self.process_id), "-a", ";".join(self.addresses)]
        if self.workers is not None:
            args += ["-w", str(self.workers)]
        if self.recovery_dir is not None:
            args += [
                "-r", str(self.recovery_dir),
                "-s", str(self.snapshot_seconds),
                "-b", str(self.backup_seconds),
            ]
        return args + list(self.extra_args)


def _int(env: Mapping[str, str], name: str, default: Optional[int], minimum: int) -> Optional[int]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise LaunchError(f"{name} must be a whole number (got {raw!r})") from None
    if value < minimum:
        raise LaunchError(f"{name} must be at least {minimum} (got {value})")
    return value


def available_jobs() -> List[str]:
    """Job modules of the ``dataflows`` package."""
    import dataflows

    return sorted(
        m.name
        for m in pkgutil.iter_modules(dataflows.__path__)
        if not m.name.startswith("_") and m.name not in NOT_JOBS
    )


def plan_from_env(env: Mapping[str, str], argv: Sequence[str], jobs: Optional[Sequence[str]] = None) -> Plan:
    """Build the plan from the environment and the arguments; raise LaunchError."""
    argv = list(argv)
    job = env.get("JOB", "").strip()
    if argv and not argv[0].startswith("-"):
        job = argv.pop(0)
    jobs = available_jobs() if jobs is None else list(jobs)
    if not job:
        raise LaunchError(f"no job: set JOB or pass it as the first argument (one of {', '.join(jobs)})")
    if job not in jobs:
        raise LaunchError(f"unknown job {job!r} (one of {', '.join(jobs)})")

    explicit = env.get("BYTEWAX_ADDRESSES", "").strip()
    replicas = _int(env, "BYTEWAX_REPLICAS", None, 1)
    process_id = _int(env, "BYTEWAX_PROCESS_ID", None, 0)
    hostname = env.get("HOSTNAME", "").strip() or socket.gethostname()

    addresses: List[str] = []
    if explicit:
        addresses = [a.strip() for a in explicit.split(";") if a.strip()]
        for address in addresses:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise LaunchError(f"BYTEWAX_ADDRESSES: {address!r} is not host:port")
        if replicas is not None and replicas != len(addresses):
            raise LaunchError(
                f"BYTEWAX_REPLICAS={replicas} but BYTEWAX_ADDRESSES lists {len(addresses)} processes"
            )
    elif replicas is not None and replicas > 1:
        sts = env.get("BYTEWAX_STATEFULSET", "").strip() or statefulset_name(hostname)
        if not sts:
            raise LaunchError(
                f"BYTEWAX_REPLICAS={replicas} but hostname {hostname!r} has no StatefulSet "
                "ordinal: set BYTEWAX_STATEFULSET and BYTEWAX_PROCESS_ID, or BYTEWAX_ADDRESSES"
            )
        service = env.get("BYTEWAX_SERVICE", "").strip() or sts
        port = _int(env, "BYTEWAX_PORT", DEFAULT_PORT, 1)
        if port > 65535:
            raise LaunchError(f"BYTEWAX_PORT must be a TCP port (got {port})")
        addresses = peer_addresses(sts, service, replicas, port)

    cluster_configured = bool(explicit) or replicas is not None
    if process_id is None and cluster_configured:
        process_id = parse_ordinal(hostname)
    if len(addresses) > 1:
        if process_id is None:
            raise LaunchError(
                f"{len(addresses)} processes but no process id: hostname {hostname!r} "
                "has no ordinal; set BYTEWAX_PROCESS_ID"
            )
        if process_id >= len(addresses):
            raise LaunchError(
                f"process id {process_id} is outside 0..{len(addresses) - 1} "
                f"({len(addresses)} processes): is BYTEWAX_REPLICAS up to date?"
            )
    elif process_id not in (None, 0):
        raise LaunchError(f"process id {process_id} but only one process is configured")

    recovery = env.get("RECOVERY_DIR", "").strip()
    return Plan(
        job=job,
        process_id=process_id,
        addresses=tuple(addresses) if len(addresses) > 1 else (),
        workers=_int(env, "BYTEWAX_WORKERS_PER_PROCESS", None, 1),
        recovery_dir=Path(recovery) if recovery else None,
        recovery_partitions=_int(env, "RECOVERY_PARTITIONS", 1, 1),
        # bytewax.run takes whole seconds
        snapshot_seconds=_int(env, "RECOVERY_SNAPSHOT_SECONDS", DEFAULT_SNAPSHOT_SECONDS, 1),
        backup_seconds=_int(env, "RECOVERY_BACKUP_SECONDS", DEFAULT_BACKUP_SECONDS, 0),
        dns_wait_seconds=_int(env, "BYTEWAX_DNS_WAIT_SECONDS", DEFAULT_DNS_WAIT_SECONDS, 0),
        extra_args=tuple(argv),
    )


# --- side effects ---------------------------------------------------------------


def existing_partitions(directory: Path) -> List[int]:
    """Indexes of the ``part-N.sqlite3`` files in ``directory``."""
    if not directory.is_dir():
        return []
    found = (_PART.match(p.name) for p in directory.iterdir())
    return sorted(int(m.group("index")) for m in found if m)


def store_partition_count(directory: Path, index: int) -> Optional[int]:
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


def prune_uncommitted(directory: Path) -> None:
    """Drop the snapshots a killed execution left beyond the resume epoch (see
    ``clickstream.recovery_store``). Needs every partition of the store here:
    true for the default single-partition store (pod 0 holds it); with
    partitions spread over pods it is skipped with a warning."""
    from clickstream.recovery_store import IncompleteStore, prune_uncommitted_snapshots

    try:
        epoch, deleted = prune_uncommitted_snapshots(directory)
    except IncompleteStore as exc:
        log(f"recovery: warning: uncommitted snapshots not pruned: {exc}")
        return
    log(f"recovery: resuming at epoch {epoch}; pruned {deleted} uncommitted snapshot(s)")


def init_recovery(plan: Plan, python: str = sys.executable) -> bool:
    """Create this process's recovery partitions on first start.

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
        prune_uncommitted(directory)
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


def describe(plan: Plan) -> str:
    if plan.clustered:
        return f"job {plan.job}: process {plan.process_id} of {plan.processes}"
    return f"job {plan.job}: single process"


def job_environment(env: Mapping[str, str]) -> dict:
    """The job's environment: ``env`` without the variables ``bytewax.run`` would read."""
    return {k: v for k, v in env.items() if k not in BYTEWAX_RUN_VARS}


def main(argv: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None) -> int:
    env = dict(os.environ if env is None else env)
    argv = sys.argv[1:] if argv is None else argv
    try:
        plan = plan_from_env(env, argv)
        log(describe(plan))
        for name, instead in UNUSED_BYTEWAX_VARS.items():
            if name in env:
                log(f"ignoring {name} (use {instead})")
        if plan.clustered and plan.dns_wait_seconds > 0:
            own_host = plan.addresses[plan.process_id].rpartition(":")[0]
            wait_for_dns(own_host, plan.dns_wait_seconds)
        if plan.recovery_dir is not None:
            init_recovery(plan)
        command = [sys.executable] + plan.bytewax_args()
    except LaunchError as exc:
        log(f"error: {exc}")
        return 2
    log("exec " + shlex.join(command))
    sys.stdout.flush()
    os.execve(command[0], command, job_environment(env))
    return 0  # not reached


if __name__ == "__main__":
    # Run as a file (``python deploy/launch.py``): make the project importable
    # from a source checkout too (in the image the package is installed).
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.append(root)
    sys.exit(main())
