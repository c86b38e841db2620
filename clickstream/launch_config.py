"""What the launcher starts: the plan of one Bytewax process, from the
environment and the arguments. Pure logic, no side effects; the launcher
(:mod:`clickstream.launch`) carries the plan out. Every variable is described
in ``docs/deploy.md``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

from clickstream.jobs import available_jobs, job_module
from clickstream.recovery_checks import DEFAULT_MIN_FREE_MB

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
#: Old names (``python -m clickstream.run_job``) still read for one release.
DEPRECATED_VARS = {
    "SNAPSHOT_SECONDS": "RECOVERY_SNAPSHOT_SECONDS",
    "BACKUP_SECONDS": "RECOVERY_BACKUP_SECONDS",
}

_ORDINAL = re.compile(r"^(?P<name>.+)-(?P<ordinal>0|[1-9][0-9]*)$")


class LaunchError(Exception):
    """The configuration cannot start a process; the message says why."""


def parse_ordinal(hostname: str) -> int | None:
    """The StatefulSet pod ordinal in a hostname: ``clicks-2`` -> 2, else None.

    Only a pod name (the first DNS label) counts: ``clicks-2.clicks.ns.svc`` -> 2.
    """
    match = _ORDINAL.match(hostname.split(".", 1)[0])
    return int(match.group("ordinal")) if match else None


def statefulset_name(hostname: str) -> str | None:
    """``clicks-2`` -> ``clicks``; None without an ordinal."""
    match = _ORDINAL.match(hostname.split(".", 1)[0])
    return match.group("name") if match else None


def peer_addresses(statefulset: str, service: str, replicas: int, port: int = DEFAULT_PORT) -> list[str]:
    """``<statefulset>-<i>.<service>:<port>`` for every process, in id order."""
    if replicas < 1:
        raise LaunchError(f"BYTEWAX_REPLICAS must be at least 1 (got {replicas})")
    return [f"{statefulset}-{i}.{service}:{port}" for i in range(replicas)]


def owned_partitions(process_id: int | None, processes: int, partitions: int) -> list[int]:
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
    process_id: int | None = None
    addresses: Sequence[str] = ()
    workers: int | None = None
    recovery_dir: Path | None = None
    recovery_partitions: int = 1
    snapshot_seconds: int = DEFAULT_SNAPSHOT_SECONDS
    backup_seconds: int = DEFAULT_BACKUP_SECONDS
    dns_wait_seconds: int = DEFAULT_DNS_WAIT_SECONDS
    recovery_min_free_mb: int = DEFAULT_MIN_FREE_MB
    extra_args: Sequence[str] = field(default_factory=tuple)
    #: Warnings about the configuration (deprecated names), logged at start.
    warnings: Sequence[str] = ()

    @property
    def processes(self) -> int:
        return max(1, len(self.addresses))

    @property
    def clustered(self) -> bool:
        return len(self.addresses) > 1

    @property
    def owned_partitions(self) -> list[int]:
        return owned_partitions(self.process_id, self.processes, self.recovery_partitions)

    def bytewax_args(self) -> list[str]:
        """Arguments after ``python``."""
        args = ["-m", "bytewax.run", job_module(self.job)]
        if self.clustered:
            args += ["-i", str(self.process_id), "-a", ";".join(self.addresses)]
        if self.workers is not None:
            args += ["-w", str(self.workers)]
        if self.recovery_dir is not None:
            args += [
                "-r",
                str(self.recovery_dir),
                "-s",
                str(self.snapshot_seconds),
                "-b",
                str(self.backup_seconds),
            ]
        return args + list(self.extra_args)


@overload
def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int: ...
@overload
def _int(env: Mapping[str, str], name: str, default: None, minimum: int) -> int | None: ...
def _int(env: Mapping[str, str], name: str, default: int | None, minimum: int) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        hint = ": bytewax.run takes whole seconds" if name.endswith("SECONDS") else ""
        raise LaunchError(f"{name} must be a whole number (got {raw!r}){hint}") from None
    if value < minimum:
        raise LaunchError(f"{name} must be at least {minimum} (got {value})")
    return value


def _seconds(env: Mapping[str, str], name: str, default: int, minimum: int, warnings: list[str]) -> int:
    """A ``RECOVERY_*_SECONDS`` variable, or its deprecated old name."""
    old = next(o for o, new in DEPRECATED_VARS.items() if new == name)
    if not env.get(old, "").strip():
        return _int(env, name, default, minimum)
    if env.get(name, "").strip():
        warnings.append(f"warning: {old} is deprecated and ignored here: {name} is set")
        return _int(env, name, default, minimum)
    warnings.append(f"warning: {old} is deprecated: rename it {name} (the old name goes in the next release)")
    return _int(env, old, default, minimum)


def _job_and_extra_args(env: Mapping[str, str], argv: Sequence[str], jobs: Sequence[str] | None):
    """``[JOB] [--] [extra bytewax.run args]``; the job defaults to ``$JOB``."""
    argv = list(argv)
    job = env.get("JOB", "").strip()
    if argv and not argv[0].startswith("-"):
        job = argv.pop(0)
    if argv[:1] == ["--"]:
        argv.pop(0)
    jobs = available_jobs() if jobs is None else list(jobs)
    if not job:
        raise LaunchError(f"no job: set JOB or pass it as the first argument (one of {', '.join(jobs)})")
    if job not in jobs:
        raise LaunchError(f"unknown job {job!r} (one of {', '.join(jobs)})")
    return job, argv


def _cluster(env: Mapping[str, str]):
    """``(process id, addresses)`` of a cluster, or ``(None or 0, [])`` for one process."""
    explicit = env.get("BYTEWAX_ADDRESSES", "").strip()
    replicas = _int(env, "BYTEWAX_REPLICAS", None, 1)
    process_id = _int(env, "BYTEWAX_PROCESS_ID", None, 0)
    hostname = env.get("HOSTNAME", "").strip() or socket.gethostname()

    addresses: list[str] = []
    if explicit:
        addresses = [a.strip() for a in explicit.split(";") if a.strip()]
        for address in addresses:
            host, sep, port_text = address.rpartition(":")
            if not sep or not host or not port_text.isdigit():
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
    return process_id, addresses


def plan_from_env(env: Mapping[str, str], argv: Sequence[str], jobs: Sequence[str] | None = None) -> Plan:
    """Build the plan from the environment and the arguments; raise LaunchError."""
    job, extra_args = _job_and_extra_args(env, argv, jobs)
    process_id, addresses = _cluster(env)
    warnings: list[str] = []
    recovery = env.get("RECOVERY_DIR", "").strip()
    return Plan(
        job=job,
        process_id=process_id,
        addresses=tuple(addresses) if len(addresses) > 1 else (),
        workers=_int(env, "BYTEWAX_WORKERS_PER_PROCESS", None, 1),
        recovery_dir=Path(recovery) if recovery else None,
        recovery_partitions=_int(env, "RECOVERY_PARTITIONS", 1, 1),
        # bytewax.run takes whole seconds: a fraction is refused, never rounded
        snapshot_seconds=_seconds(env, "RECOVERY_SNAPSHOT_SECONDS", DEFAULT_SNAPSHOT_SECONDS, 1, warnings),
        backup_seconds=_seconds(env, "RECOVERY_BACKUP_SECONDS", DEFAULT_BACKUP_SECONDS, 0, warnings),
        dns_wait_seconds=_int(env, "BYTEWAX_DNS_WAIT_SECONDS", DEFAULT_DNS_WAIT_SECONDS, 0),
        recovery_min_free_mb=_int(env, "RECOVERY_MIN_FREE_MB", DEFAULT_MIN_FREE_MB, 0),
        extra_args=tuple(extra_args),
        warnings=tuple(warnings),
    )


def describe(plan: Plan) -> str:
    if plan.clustered:
        return f"job {plan.job}: process {plan.process_id} of {plan.processes}"
    return f"job {plan.job}: single process"


def job_environment(env: Mapping[str, str]) -> dict:
    """The job's environment: ``env`` without the variables ``bytewax.run`` would read."""
    return {k: v for k, v in env.items() if k not in BYTEWAX_RUN_VARS}
