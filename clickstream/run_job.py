"""Run a job with Bytewax recovery: create the recovery partitions on first start,
reuse them afterwards.

    python -m clickstream.run_job clicks --recovery-dir /var/lib/clickstream/recovery
    python -m clickstream.run_job top_users -- -w 2

Settings (flags override environment): RECOVERY_DIR (empty: run without
recovery), RECOVERY_PARTITIONS (default 1; fixed once created),
SNAPSHOT_SECONDS (default 5; also the epoch length), BACKUP_SECONDS (default
0: keep no older snapshots; set it to how often the directory is backed up).
Anything after ``--`` goes to ``python -m bytewax.run`` (``-w``, ``-i``, ``-a``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from clickstream.recovery_store import IncompleteStore, prune_uncommitted_snapshots

JOBS = ("clicks", "top_users", "alerts", "sessions")


def recovery_initialised(directory: Path) -> bool:
    """Whether ``directory`` already holds Bytewax recovery partitions."""
    return directory.is_dir() and any(directory.glob("part-*.sqlite3"))


def init_recovery(directory: Path, partitions: int) -> bool:
    """Create the recovery partitions unless they exist. Returns True if created."""
    if recovery_initialised(directory):
        return False
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "bytewax.recovery", str(directory), str(partitions)], check=True
    )
    return True


def prune_store(directory: Path) -> str:
    """Drop the snapshots a killed execution left beyond the resume epoch (see
    :mod:`clickstream.recovery_store`); returns a line for the log."""
    try:
        epoch, deleted = prune_uncommitted_snapshots(directory)
    except IncompleteStore as exc:
        return f"warning: uncommitted snapshots not pruned: {exc}"
    return f"resuming at epoch {epoch}; pruned {deleted} uncommitted snapshot(s)"


def bytewax_command(
    job: str, recovery_dir: Optional[Path], snapshot_s: float, backup_s: float, extra: List[str]
) -> List[str]:
    cmd = [sys.executable, "-m", "bytewax.run", f"dataflows.{job}"]
    if recovery_dir is not None:
        cmd += ["-r", str(recovery_dir), "-s", f"{snapshot_s:g}", "-b", f"{backup_s:g}"]
    return cmd + extra


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m clickstream.run_job", description=__doc__.split("\n")[0])
    parser.add_argument("job", choices=JOBS)
    parser.add_argument("--recovery-dir", default=env.get("RECOVERY_DIR") or None)
    parser.add_argument("--recovery-partitions", type=int, default=int(env.get("RECOVERY_PARTITIONS", "1")))
    parser.add_argument("--snapshot-seconds", type=float, default=float(env.get("SNAPSHOT_SECONDS", "5")))
    parser.add_argument("--backup-seconds", type=float, default=float(env.get("BACKUP_SECONDS", "0")))
    args = parser.parse_args(argv)
    if args.recovery_partitions < 1 or args.snapshot_seconds <= 0 or args.backup_seconds < 0:
        parser.error("RECOVERY_PARTITIONS must be >= 1, SNAPSHOT_SECONDS > 0, BACKUP_SECONDS >= 0")
    recovery_dir = Path(args.recovery_dir) if args.recovery_dir else None
    if recovery_dir is not None:
        if init_recovery(recovery_dir, args.recovery_partitions):
            print(f"run_job: created {args.recovery_partitions} recovery partition(s) in {recovery_dir}", flush=True)
        else:
            print("run_job: " + prune_store(recovery_dir), flush=True)
    cmd = bytewax_command(args.job, recovery_dir, args.snapshot_seconds, args.backup_seconds, extra)
    print("run_job: " + " ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
