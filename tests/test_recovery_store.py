"""The recovery store: uncommitted snapshots left by a killed execution.

A story on real Bytewax recovery (``run_main`` with a ``RecoveryConfig``): a
per-key counter runs, then a killed execution leaves an uncommitted snapshot
of key ``a`` behind, the next execution never touches ``a``, and the one after
that counts ``a`` again. Bytewax alone loads the dead execution's count; after
:func:`prune_uncommitted_snapshots` it loads the committed one.
"""

from __future__ import annotations

import pickle
import sqlite3
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from clickstream.launch import prune_store
from clickstream.recovery_store import (
    IncompleteStore,
    main,
    prune_uncommitted_snapshots,
    resume_snapshots,
    summarise,
)

COUNT_STEP = "counts.count.stateful_flat_map.stateful.stateful_batch"


def counting_flow(items: list[tuple], out: list) -> Dataflow:
    """Counts items per key; TestingSource resumes at its snapshotted index."""
    flow = Dataflow("counts")
    clicks = op.input("inp", flow, TestingSource(items, batch_size=1))

    def count(state, _item):
        state = (state or 0) + 1
        return state, state

    op.output("out", op.stateful_map("count", clicks, count), TestingSink(out))
    return flow


def run(store: Path, items: list[tuple]) -> list:
    out: list = []
    run_main(
        counting_flow(items, out), epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(store))
    )
    return out


def executions(store: Path) -> list:
    with sqlite3.connect(store / "part-0.sqlite3") as db:
        return db.execute("SELECT ex_num, worker_count, resume_epoch FROM exs ORDER BY ex_num").fetchall()


def leave_uncommitted_snapshot(store: Path, key: str, count: int) -> int:
    """What a run killed mid-epoch leaves: its execution row and a snapshot of
    the epoch it never committed. Returns that epoch."""
    epoch = summarise(store).resume_epoch
    with sqlite3.connect(store / "part-0.sqlite3") as db:
        (last,) = db.execute("SELECT MAX(ex_num) FROM exs").fetchone()
        db.execute("INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (?, 1, ?)", (last + 1, epoch))
        db.execute(
            "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, ?, ?)",
            (COUNT_STEP, key, epoch, pickle.dumps(count)),
        )
    return epoch


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    init_db_dir(tmp_path, 1)
    return tmp_path


ITEMS = [("a", 1), ("a", 1), ("b", 1), ("b", 1), ("b", 1), ("a", 1)]
#: The run in the middle stops like a crash (no end-of-input snapshot of every key).
MIDDLE = [*ITEMS[:5], TestingSource.ABORT()]


def test_a_killed_executions_snapshot_is_loaded_two_resumes_later_without_pruning(store):
    """Pins down the Bytewax 0.21.1 behaviour the pruning exists for."""
    assert run(store, ITEMS[:2]) == [("a", 1), ("a", 2)]
    leave_uncommitted_snapshot(store, "a", 99)  # the dead run had counted to 99
    assert run(store, MIDDLE) == [("b", 1), ("b", 2), ("b", 3)]  # never touches a
    assert run(store, ITEMS) == [("a", 100)]  # the dead run's count came back


def test_pruning_before_each_start_resumes_committed_state_only(store):
    assert run(store, ITEMS[:2]) == [("a", 1), ("a", 2)]
    stale_epoch = leave_uncommitted_snapshot(store, "a", 99)
    before = summarise(store)
    assert (before.resume_epoch, before.uncommitted) == (stale_epoch, 1)

    assert prune_uncommitted_snapshots(store) == (stale_epoch, 1)
    assert run(store, MIDDLE) == [("b", 1), ("b", 2), ("b", 3)]
    # Bytewax resumed that execution exactly where we computed.
    assert executions(store)[-1][2] == stale_epoch

    expected_next = summarise(store).resume_epoch
    assert prune_uncommitted_snapshots(store) == (expected_next, 0)
    assert run(store, ITEMS) == [("a", 3)]
    assert executions(store)[-1][2] == expected_next


def test_resume_snapshots_are_the_committed_ones_a_resume_loads(store):
    assert run(store, ITEMS[:2]) == [("a", 1), ("a", 2)]
    leave_uncommitted_snapshot(store, "a", 99)
    loaded = {key: pickle.loads(ser) for key, ser in resume_snapshots(store).items()}
    # The source's position and the count, not the dead run's 99.
    assert loaded == {("counts.inp", "iterable"): 2, (COUNT_STEP, "a"): 2}
    prune_uncommitted_snapshots(store)
    assert run(store, [("a", 1)] * 3) == [("a", 3)]  # resumed at item 2 with count 2


def test_resume_epoch_is_the_one_bytewax_uses(store):
    assert summarise(store).resume_epoch == 1  # new store: Bytewax's first epoch
    for n in (2, 4, 6):
        predicted = summarise(store).resume_epoch
        run(store, ITEMS[:n])
        assert executions(store)[-1][2] == predicted
    assert [ex for ex, _, _ in executions(store)] == [0, 1, 2]


def test_a_store_missing_a_partition_is_refused_with_the_reason(tmp_path):
    init_db_dir(tmp_path, 2)
    (tmp_path / "part-0.sqlite3").unlink()
    with pytest.raises(IncompleteStore, match=r"holds 1 of the store's 2 partitions \(missing \[0\]\)"):
        prune_uncommitted_snapshots(tmp_path)
    assert prune_store(tmp_path).startswith("warning: uncommitted snapshots not pruned: ")
    with pytest.raises(IncompleteStore, match="no recovery partitions"):
        summarise(tmp_path / "nothing-here")


def test_command_line_summary_and_prune(store, capsys):
    run(store, ITEMS[:2])
    epoch = leave_uncommitted_snapshot(store, "a", 99)
    assert main([str(store), "--prune"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "partitions: 1",
        "execution 0: 1 worker(s), resumed at epoch 1",
        f"execution 1: 1 worker(s), resumed at epoch {epoch}",
        f"next resume epoch: {epoch}",
        "snapshots: 3 (1 uncommitted)",
        "pruned 1 uncommitted snapshot(s)",
    ]
    assert prune_store(store) == f"resuming at epoch {epoch}; pruned 0 uncommitted snapshot(s)"
