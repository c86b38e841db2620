"""What ``python -m clickstream.status`` reports, as plain data, and its two
renderings: the table (:func:`render_table`) and the JSON document
(:func:`to_json`, keys described in :mod:`clickstream.status`). Pure: no
Kafka, no files, so the rendering is tested on its own."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from clickstream.tooling import table

#: ``--end-offsets`` modes: the high watermark (ListOffsets latest, right on a
#: real cluster) or a read to each partition's end (the local Tansu broker's
#: high watermark is wrong for multi-record batches).
END_OFFSET_MODES = ("watermark", "read")


@dataclass(frozen=True)
class PartitionRow:
    """One input partition: where it ends, where the job's group and its
    recovery store stand (None: nothing committed / snapshotted)."""

    topic: str
    partition: int
    end: int
    committed: int | None = None
    store_offset: int | None = None

    @property
    def lag(self) -> int | None:
        return None if self.committed is None else self.end - self.committed

    @property
    def store_lag(self) -> int | None:
        return None if self.store_offset is None else self.end - self.store_offset


@dataclass(frozen=True)
class StoreState:
    """Where the recovery store has the job (``state``: ``none`` when
    RECOVERY_DIR is unset, ``empty`` without partitions, ``unreadable``
    with ``detail`` saying why, ``present``)."""

    directory: str | None
    state: str
    detail: str | None = None
    partitions: int | None = None
    resume_epoch: int | None = None
    last_snapshot_epoch: int | None = None
    state_keys: int | None = None
    state_bytes: int | None = None


@dataclass(frozen=True)
class JobStatus:
    job: str
    group_id: str | None
    end_offsets: str
    rows: list[PartitionRow]
    store: StoreState
    missing_topics: list[str] = field(default_factory=list)
    #: Other warnings found while collecting (e.g. the store is another job's).
    warnings: list[str] = field(default_factory=list)

    @property
    def started(self) -> bool:
        """Whether the job has ever run: a committed offset or a snapshot."""
        return any(r.committed is not None for r in self.rows) or self.store.last_snapshot_epoch is not None

    @property
    def notes(self) -> list[str]:
        """Warnings for the reader, in order."""
        notes = [f"topic {t!r} does not exist" for t in self.missing_topics] + list(self.warnings)
        if not self.started:
            store = "no recovery store" if self.store.state in ("none", "empty") else "no snapshot"
            notes.append(
                f"job {self.job} has never run: no committed offsets in group {self.group_id}, {store}"
            )
        behind = [r for r in self.rows if min(_known(r.lag, r.store_lag), default=0) < 0]
        if behind and self.end_offsets == "watermark":
            notes.append(
                "an end offset is below a committed or stored offset: the broker's high watermark "
                "looks wrong (the local Tansu broker's is); use --end-offsets read"
            )
        elif behind:
            notes.append("an end offset is below a committed or stored offset: was a topic recreated?")
        return notes


def _known(*values: int | None) -> list[int]:
    return [v for v in values if v is not None]


def _sum(values: Iterable[int | None]) -> int | None:
    known = _known(*values)
    return sum(known) if known else None


def totals(rows: list[PartitionRow]) -> dict[str, int | None]:
    """Sums over the partitions (lags: over those that have one)."""
    return {
        "end": sum(r.end for r in rows),
        "committed": _sum(r.committed for r in rows),
        "lag": _sum(r.lag for r in rows),
        "store_offset": _sum(r.store_offset for r in rows),
        "store_lag": _sum(r.store_lag for r in rows),
    }


def to_json(status: JobStatus) -> dict[str, Any]:
    """The ``--json`` document (stable keys, see :mod:`clickstream.status`)."""
    store = status.store
    return {
        "job": status.job,
        "group_id": status.group_id,
        "end_offsets": status.end_offsets,
        "started": status.started,
        "partitions": [
            {
                "topic": r.topic,
                "partition": r.partition,
                "end": r.end,
                "committed": r.committed,
                "lag": r.lag,
                "store_offset": r.store_offset,
                "store_lag": r.store_lag,
            }
            for r in status.rows
        ],
        "total": totals(status.rows),
        "missing_topics": list(status.missing_topics),
        "store": {
            "directory": store.directory,
            "state": store.state,
            "detail": store.detail,
            "partitions": store.partitions,
            "resume_epoch": store.resume_epoch,
            "last_snapshot_epoch": store.last_snapshot_epoch,
            "state_keys": store.state_keys,
            "state_bytes": store.state_bytes,
        },
        "notes": status.notes,
    }


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def store_line(store: StoreState) -> str:
    if store.state == "none":
        return "recovery store: none (RECOVERY_DIR unset)"
    if store.state == "empty":
        return f"recovery store: {store.directory}: no store there"
    if store.state == "unreadable":
        return f"recovery store: {store.directory}: unreadable: {store.detail}"
    last = _cell(store.last_snapshot_epoch)
    return (
        f"recovery store: {store.directory}: {store.partitions} partition(s), last snapshot epoch "
        f"{last}, resumes at epoch {store.resume_epoch}, state {store.state_keys} key(s) "
        f"{store.state_bytes} bytes"
    )


def render_table(status: JobStatus) -> list[str]:
    """The status as text lines: a header, the per-partition table with a
    total row, then the notes."""
    how = "high watermark" if status.end_offsets == "watermark" else "read to the end"
    lines = [
        f"job {status.job}: group {status.group_id}, end offsets by {how}",
        store_line(status.store),
        "",
    ]
    rows: list[list[Any]] = [
        [
            r.topic,
            r.partition,
            r.end,
            _cell(r.committed),
            _cell(r.lag),
            _cell(r.store_offset),
            _cell(r.store_lag),
        ]
        for r in status.rows
    ]
    total = totals(status.rows)
    rows.append(
        [
            "total",
            "",
            total["end"],
            *(_cell(total[k]) for k in ("committed", "lag", "store_offset", "store_lag")),
        ]
    )
    headers = ["topic", "partition", "end", "committed", "lag", "store offset", "store lag"]
    lines += table(rows, headers, align="lrrrrrr")
    return lines + [f"note: {n}" for n in status.notes]
