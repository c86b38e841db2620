"""Where a job stands: ``python -m clickstream.status JOB [--json] [--end-offsets watermark|read]``.

For every partition of every input topic of ``JOB``: the end offset, the
offset committed to the job's consumer group (``KAFKA_GROUP_ID``, default
``clickstream-<job>``) and the lag (end - committed), then the offset the
recovery store (``RECOVERY_DIR``) would resume from and its lag, with a total
row; and the store's last snapshot epoch, resume epoch and state size. It
reads the same variables as the job (``KAFKA_*``, topics, ``RECOVERY_DIR``),
never writes to Kafka or to the store (the store is opened read-only, so it
is safe while the job runs; it shows what a resume would load).

End offsets (``--end-offsets``): ``watermark`` (default) asks the broker for
each partition's high watermark, the right answer on a real cluster; ``read``
reads every input partition from the beginning to its confirmed end and
counts from the last offset read: for the local Tansu broker, whose high
watermark is wrong for multi-record batches (a note says so when an end
falls below a committed offset), and slow on big topics.

``--json`` prints one document with these keys: ``job``, ``group_id``,
``end_offsets`` (the mode), ``started`` (false: no committed offset and no
snapshot), ``partitions`` (a list of ``topic``, ``partition``, ``end``,
``committed``, ``lag``, ``store_offset``, ``store_lag``; null where nothing
is committed or stored), ``total`` (the same sums, without topic/partition),
``missing_topics``, ``store`` (``directory``, ``state``: ``none`` /
``empty`` / ``unreadable`` / ``present``, ``detail``, ``partitions``,
``resume_epoch``, ``last_snapshot_epoch``, ``state_keys``, ``state_bytes``)
and ``notes`` (warnings, as in the table).

Exit status 0, or 2 with one line on stderr for an unknown job, a bad
setting or an unreachable broker (``--timeout`` seconds per request).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pickle
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clickstream.jobs import JobInput, available_jobs, job_inputs, job_module
from clickstream.recovery_store import IncompleteStore, committed_snapshots
from clickstream.status_report import (
    END_OFFSET_MODES,
    JobStatus,
    PartitionRow,
    StoreState,
    render_table,
    to_json,
)
from clickstream.store_layout import LAYOUT_FILE
from connectors.client_logs import silent_logger
from connectors.kafka_io import KafkaIOError, ReadTimeout, partition_counts, read_to_end, reader_config
from connectors.kafka_source import stored_offset

#: A read to the end gets at least this long, whatever ``--timeout`` says.
READ_TIMEOUT_S = 60.0


class StatusError(Exception):
    """The status cannot be shown (exit status 2); the message says why."""


def _ignore(_error: object) -> None:
    """An ``error_cb`` that drops librdkafka's errors (the command reports its own)."""


def _settings(job: str, env: Mapping[str, str]) -> tuple[Any, Any]:
    from dataflows.settings import ConfigError, load_settings

    jobs = available_jobs()
    if job not in jobs:
        raise StatusError(f"unknown job {job!r} (one of {', '.join(jobs)})")
    try:
        return load_settings(importlib.import_module(job_module(job)).SETTINGS, env)
    except ConfigError as exc:
        head, *problems = (line.strip() for line in exc.message.splitlines())
        raise StatusError(f"{head} {'; '.join(problems)}") from None


def committed_offsets(config: dict[str, Any], group: str, parts: list[tuple[str, int]], timeout_s: float):
    """``{(topic, partition): offset}`` committed to ``group`` (absent: none)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": "false"})
    try:
        got = consumer.committed([TopicPartition(t, p) for t, p in parts], timeout=timeout_s)
    except KafkaException as exc:
        raise StatusError(f"cannot read the offsets of group {group!r}: {exc}") from None
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset for tp in got if tp.offset >= 0}


def end_offsets(
    config: dict[str, Any], parts: list[tuple[str, int]], mode: str, timeout_s: float
) -> dict[tuple[str, int], int]:
    """``{(topic, partition): end offset}`` by high watermark or by reading to the end."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    plain = {k: v for k, v in config.items() if k != "group.id"}
    consumer = Consumer(reader_config(plain))
    ends = {part: 0 for part in parts}
    try:
        if mode == "watermark":
            for topic, p in parts:
                ends[(topic, p)] = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=timeout_s, cached=False
                )[1]
            return ends
        for topic in dict.fromkeys(t for t, _ in parts):
            partitions = [p for t, p in parts if t == topic]
            for batch in read_to_end(consumer, topic, partitions, timeout_s=max(READ_TIMEOUT_S, timeout_s)):
                for msg in batch:
                    key = (topic, msg.partition())
                    ends[key] = max(ends[key], msg.offset() + 1)
        return ends
    except (KafkaException, KafkaIOError, ReadTimeout) as exc:
        raise StatusError(f"cannot read the end offsets: {exc}") from None
    finally:
        consumer.close()


def store_state(
    directory: str | None, inputs: list[JobInput]
) -> tuple[StoreState, dict[tuple[str, int], int]]:
    """The store's state and the offset each input partition would resume from."""
    if not directory:
        return StoreState(None, "none"), {}
    path = Path(directory)
    if not any(path.glob("*.sqlite3")):
        return StoreState(directory, "empty"), {}
    try:
        summary, snapshots = committed_snapshots(path)
    except (IncompleteStore, sqlite3.Error) as exc:
        return StoreState(directory, "unreadable", detail=str(exc)), {}
    sources = {i.step_id for i in inputs}
    offsets: dict[tuple[str, int], int] = {}
    live = [s for s in snapshots if s.value is not None]
    for snap in live:
        if snap.step_id in sources and snap.value is not None:
            # state key "<partition>-<topic>", value the partition's next offset
            index, _, topic = snap.state_key.partition("-")
            offset = stored_offset(pickle.loads(snap.value))
            if offset >= 0:  # negative: librdkafka's "beginning", nothing read yet
                offsets[(topic, int(index))] = offset
    state = StoreState(
        directory,
        "present",
        partitions=summary.partitions,
        resume_epoch=summary.resume_epoch,
        last_snapshot_epoch=max((s.epoch for s in snapshots), default=None),
        state_keys=len(live),
        state_bytes=sum(len(s.value or b"") for s in live),
    )
    return state, offsets


def layout_warnings(directory: str | None, job: str) -> list[str]:
    """A store recorded (``layout.json``) as another job's."""
    path = Path(directory or "") / LAYOUT_FILE
    if not directory or not path.is_file():
        return []
    try:
        recorded = json.loads(path.read_text()).get("job")
    except (OSError, ValueError, AttributeError):
        return [f"{path} is unreadable"]
    return [f"the recovery store was written by job {recorded!r}"] if recorded not in (None, job) else []


def collect(job: str, env: Mapping[str, str], mode: str = "watermark", timeout_s: float = 5.0) -> JobStatus:
    """Everything the status shows, from Kafka and the recovery store."""
    settings, kafka = _settings(job, env)
    inputs = job_inputs(job, settings, kafka)
    # librdkafka's lines and errors are silenced: an unreachable broker is
    # the one line this command prints itself.
    config: dict[str, Any] = {
        **kafka.to_librdkafka(),
        "logger": silent_logger("clickstream.status.librdkafka"),
        "error_cb": _ignore,
    }
    try:
        counts = partition_counts(config, [i.topic for i in inputs], timeout_s)
    except KafkaIOError as exc:
        raise StatusError(str(exc)) from None
    parts = [(topic, p) for topic, n in counts.items() for p in range(n or 0)]
    group = inputs[0].group_id
    committed = committed_offsets(config, group, parts, timeout_s) if group and parts else {}
    ends = end_offsets(config, parts, mode, timeout_s)
    directory = env.get("RECOVERY_DIR", "").strip() or None
    store, stored = store_state(directory, inputs)
    rows = [PartitionRow(t, p, ends[(t, p)], committed.get((t, p)), stored.get((t, p))) for t, p in parts]
    missing = [t for t, n in counts.items() if n is None]
    return JobStatus(job, group, mode, rows, store, missing, layout_warnings(directory, job))


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clickstream.status",
        description="Where a job stands: per input partition the end offset, the committed "
        "offset of the job's consumer group and its lag, and the recovery store's offset, "
        "epoch and state size. Settings from the same environment variables as the job.",
    )
    parser.add_argument("job", help=f"the job ({', '.join(available_jobs())})")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document (keys: see the module doc)"
    )
    parser.add_argument(
        "--end-offsets",
        choices=END_OFFSET_MODES,
        default="watermark",
        help="how to find each partition's end: 'watermark' (default) asks the broker for the "
        "high watermark, right on a real cluster; 'read' reads every partition to its end "
        "(for the local Tansu broker, whose high watermark is wrong; slow on big topics)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per broker request (default 5)")
    args = parser.parse_args(argv)
    try:
        status = collect(args.job, dict(os.environ if env is None else env), args.end_offsets, args.timeout)
    except StatusError as exc:
        print(f"status: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(to_json(status), indent=2))
    else:
        print("\n".join(render_table(status)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
