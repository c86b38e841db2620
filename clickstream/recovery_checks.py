"""Check a recovery directory before a job starts on it: one clear line per fault.

Without these checks a read-only directory ended in a Python traceback from
the launcher, and a corrupt ``part-N.sqlite3`` in a Rust panic inside Bytewax.
The launcher (:mod:`clickstream.launch`) calls :func:`check_recovery_dir`
before it creates, prunes or resumes the store; each fault raises
:class:`RecoveryDirFault` with the one line to print (the launcher exits 2).

While a job runs, a full disk makes Bytewax panic once ("database or disk is
full") and exit with status 1; the restart then stops here with the
free-space line. docs/deploy.md says how to recover from each fault.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

#: Refuse to start with less free space than this in the recovery directory
#: (``RECOVERY_MIN_FREE_MB``): a snapshot that cannot be written stops the job.
DEFAULT_MIN_FREE_MB = 64

RESET_HINT = (
    "restore the directory from a backup, or reset it (empty it; the job then "
    "starts over from the beginning of its input topics)"
)


class RecoveryDirFault(RuntimeError):
    """The recovery directory cannot hold the store; the message says why and what to do."""


def check_writable(directory: Path) -> None:
    """Create the directory if needed, then write, sync and remove a probe file."""
    probe = directory / f".write-check-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"ok")
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except OSError as exc:
        raise RecoveryDirFault(
            f"recovery directory {directory} is not writable ({exc.strerror}): mount it "
            "read-write and make it writable by the job's user"
        ) from None


def check_free_space(
    directory: Path, min_free_mb: int, statvfs: Callable[[str], os.statvfs_result] = os.statvfs
) -> None:
    """At least ``min_free_mb`` MiB free for the job's user (0: no check)."""
    if min_free_mb <= 0:
        return
    stat = statvfs(str(directory))
    free_mb = stat.f_bavail * stat.f_frsize / (1024 * 1024)
    if free_mb < min_free_mb:
        raise RecoveryDirFault(
            f"recovery directory {directory} has {free_mb:.1f} MiB free, less than "
            f"RECOVERY_MIN_FREE_MB={min_free_mb}: grow the volume or free space there "
            "(never delete part-N.sqlite3 files one by one)"
        )


def check_partition_file(path: Path) -> None:
    """Open ``path`` and run SQLite's ``quick_check`` on it (and read its header row)."""
    db = None
    try:
        db = sqlite3.connect(str(path), timeout=30)
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        db.execute("SELECT part_index, part_count FROM parts").fetchall()
    except sqlite3.Error as exc:
        problems = [str(exc)]
    finally:
        if db is not None:
            db.close()
    if problems != ["ok"]:
        raise RecoveryDirFault(f"recovery partition {path} is corrupt ({problems[0]}): {RESET_HINT}")


def check_recovery_dir(directory: Path, min_free_mb: int = DEFAULT_MIN_FREE_MB) -> None:
    """Writable, enough free space, and every ``part-N.sqlite3`` sound; raises
    :class:`RecoveryDirFault` on the first fault."""
    check_writable(directory)
    check_free_space(directory, min_free_mb)
    for path in sorted(directory.glob("part-*.sqlite3")):
        check_partition_file(path)
