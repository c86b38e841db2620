"""Inspect a Bytewax recovery store and drop the snapshots no execution committed.

Bytewax 0.21.1 resumes from epoch ``R``: the oldest epoch some worker of the
last execution had not finished. It loads, for every state key, the newest
snapshot *before* ``R``. Snapshots of epochs ``>= R`` were written by an
execution that was killed before it committed them, and Bytewax never deletes
them. The next execution re-runs those epochs but only re-snapshots the keys it
touches; a key it does not touch keeps the dead execution's snapshot, and the
resume after that loads it, mixing two timelines (e.g. a source offset from
one run with a sink position from another). ``tests/test_recovery_store.py``
shows it with a per-key counter.

:func:`prune_uncommitted_snapshots` removes those rows before a new execution
starts, so every resume loads committed state only. It needs every partition of
the store (the resume epoch is computed over all of them, exactly as Bytewax
does); :class:`IncompleteStore` is raised otherwise. The launcher
(``python -m clickstream.launch``) calls it before ``exec``.

:func:`committed_snapshots` gives the newest committed snapshot of every state
key, as a resume would load it (``python -m clickstream.status`` shows the
source offsets and state size from it).

``python -m clickstream.recovery_store DIR`` prints the store's executions,
resume epoch and snapshot counts (``--prune`` also prunes).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Bytewax's epoch numbering starts at 1 (epoch 0 carries routing messages).
FIRST_EPOCH = 1


class IncompleteStore(RuntimeError):
    """Not every partition of the recovery store is in the directory."""


@dataclass(frozen=True)
class StoreSummary:
    """What a recovery store holds, as Bytewax would resume it."""

    partitions: int
    executions: list[tuple[int, int, int]]  # (execution, worker count, resume epoch)
    resume_epoch: int
    snapshots: int
    uncommitted: int  # snapshots of epochs >= resume_epoch


@dataclass(frozen=True)
class Snapshot:
    """The newest committed snapshot of one state key (``value``: Bytewax's
    serialised state, None for a key the step discarded)."""

    step_id: str
    state_key: str
    epoch: int
    value: bytes | None


@contextmanager
def _connect(path: Path, readonly: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection that commits on success and is always closed (so SQLite
    checkpoints and removes its WAL files); ``readonly`` never writes."""
    if readonly:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    else:
        conn = sqlite3.connect(str(path), timeout=30)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def partition_files(directory: Path, readonly: bool = False) -> dict[int, Path]:
    """The store's partition files by partition index; checks that none is missing."""
    files: dict[int, Path] = {}
    counts = set()
    for path in sorted(Path(directory).glob("*.sqlite3")):
        with _connect(path, readonly) as conn:
            for index, count in conn.execute("SELECT part_index, part_count FROM parts"):
                files[index] = path
                counts.add(count)
    if not files:
        raise IncompleteStore(f"no recovery partitions in {directory}")
    if len(counts) != 1:
        raise IncompleteStore(f"{directory}: partitions of different stores (counts {sorted(counts)})")
    (count,) = counts
    missing = sorted(set(range(count)) - set(files))
    if missing:
        raise IncompleteStore(
            f"{directory} holds {len(files)} of the store's {count} partitions "
            f"(missing {missing}); the resume epoch needs all of them"
        )
    return files


def resume_epoch(files: dict[int, Path], readonly: bool = False) -> tuple[int, list[tuple[int, int, int]]]:
    """The epoch Bytewax will resume from, and the executions on record.

    Same rule as Bytewax: take the last execution; each of its workers is at
    the highest frontier it wrote, or at the execution's resume epoch if it
    wrote none; the resume epoch is the lowest of those.
    """
    executions: list[tuple[int, int, int]] = []
    fronts: dict[tuple[int, int], int] = {}
    for path in set(files.values()):
        with _connect(path, readonly) as conn:
            executions += conn.execute("SELECT ex_num, worker_count, resume_epoch FROM exs").fetchall()
            for ex, worker, frontier in conn.execute(
                "SELECT ex_num, worker_index, worker_frontier FROM fronts"
            ):
                fronts[(ex, worker)] = max(frontier, fronts.get((ex, worker), frontier))
    executions.sort()
    if not executions:
        return FIRST_EPOCH, executions
    ex, workers, start = executions[-1]
    return min(max(start, fronts.get((ex, w), start)) for w in range(workers)), executions


def summarise(directory: Path, readonly: bool = False) -> StoreSummary:
    return _summarise(partition_files(directory, readonly), readonly)


def _summarise(files: dict, readonly: bool) -> StoreSummary:
    epoch, executions = resume_epoch(files, readonly)
    total = uncommitted = 0
    for path in set(files.values()):
        with _connect(path, readonly) as conn:
            total += conn.execute("SELECT COUNT(*) FROM snaps").fetchone()[0]
            uncommitted += conn.execute(
                "SELECT COUNT(*) FROM snaps WHERE snap_epoch >= ?", (epoch,)
            ).fetchone()[0]
    return StoreSummary(len(files), executions, epoch, total, uncommitted)


def committed_snapshots(directory: Path) -> tuple[StoreSummary, list[Snapshot]]:
    """The store's summary and, per state key, the newest snapshot of an epoch
    before the resume epoch: what a resume would load. Opens the store
    read-only, so it is safe while the job runs."""
    files = partition_files(directory, readonly=True)
    summary = _summarise(files, readonly=True)
    newest = """
        SELECT s.step_id, s.state_key, s.snap_epoch, s.ser_change FROM snaps s
        JOIN (SELECT step_id, state_key, MAX(snap_epoch) AS e FROM snaps
              WHERE snap_epoch < ? GROUP BY step_id, state_key) m
        ON s.step_id = m.step_id AND s.state_key = m.state_key AND s.snap_epoch = m.e
    """
    snapshots: list[Snapshot] = []
    for path in set(files.values()):
        with _connect(path, readonly=True) as conn:
            snapshots += [Snapshot(*row) for row in conn.execute(newest, (summary.resume_epoch,))]
    snapshots.sort(key=lambda snap: (snap.step_id, snap.state_key))
    return summary, snapshots


def resume_snapshots(directory: Path) -> dict[tuple[str, str], bytes | None]:
    """What the next execution loads: for every ``(step id, state key)``, the
    serialized snapshot of the newest epoch before the resume epoch (None:
    the key was discarded). A source partition's key is its partition name
    (``"{i}-{topic}"`` for the Kafka sources)."""
    _, snapshots = committed_snapshots(directory)
    return {(snap.step_id, snap.state_key): snap.value for snap in snapshots}


def prune_uncommitted_snapshots(directory: Path) -> tuple[int, int]:
    """Delete the snapshots of epochs the next execution will run again.

    Returns ``(resume_epoch, rows deleted)``. Call it only while no execution
    is running on the store.
    """
    files = partition_files(directory)
    epoch, _ = resume_epoch(files)
    deleted = 0
    for path in set(files.values()):
        with _connect(path) as conn:
            deleted += conn.execute("DELETE FROM snaps WHERE snap_epoch >= ?", (epoch,)).rowcount
    return epoch, deleted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clickstream.recovery_store", description=__doc__.split("\n")[0]
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--prune", action="store_true", help="delete uncommitted snapshots")
    args = parser.parse_args(argv)
    try:
        summary = summarise(args.directory)
        print(f"partitions: {summary.partitions}")
        for ex, workers, start in summary.executions:
            print(f"execution {ex}: {workers} worker(s), resumed at epoch {start}")
        print(f"next resume epoch: {summary.resume_epoch}")
        print(f"snapshots: {summary.snapshots} ({summary.uncommitted} uncommitted)")
        if args.prune:
            _, deleted = prune_uncommitted_snapshots(args.directory)
            print(f"pruned {deleted} uncommitted snapshot(s)")
    except (IncompleteStore, sqlite3.Error) as exc:
        print(f"recovery_store: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
