"""Measuring the benchmarks' processes: process-tree sampling (RSS, CPU),
machine CPU accounting, and :func:`run_measured` (see :mod:`bench.common`
for the measurement rules)."""

from __future__ import annotations

import contextlib
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_INTERVAL_S = 0.05


# -- sampling ---------------------------------------------------------------
class TreeSampler(threading.Thread):
    """Samples RSS (sum over the process trees of ``pids``) and their CPU time."""

    def __init__(
        self,
        pids: Sequence[int],
        interval_s: float = SAMPLE_INTERVAL_S,
        on_sample: Callable[[float, int, float], None] | None = None,
    ):
        super().__init__(daemon=True)
        import psutil

        self._psutil = psutil
        self._roots = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                self._roots.append(psutil.Process(pid))
        self._interval = interval_s
        self._stop_event = threading.Event()
        self._on_sample = on_sample
        self.started = time.monotonic()
        self.peak_rss = 0
        #: (seconds since start, RSS bytes, CPU seconds so far) per sample.
        self.samples: list[tuple[float, int, float]] = []

    def sample_once(self) -> tuple[int, float] | None:
        psutil = self._psutil
        rss = 0
        cpu = 0.0
        alive = False
        for root in self._roots:
            try:
                procs = [root, *root.children(recursive=True)]
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


def wait_for_quiet(
    max_wait_s: float, threshold_cores: float = 0.3, window_s: float = 1.0, own_pids: Sequence[int] = ()
) -> float:
    """Wait (up to ``max_wait_s``) until the machine is nearly idle: less than
    ``threshold_cores`` of CPU used over ``window_s`` by processes other than
    ``own_pids`` (e.g. the broker). Returns the CPU (in cores) seen last."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy0 = system_busy_cpu()
        own0 = sum(process_cpu_seconds(p) for p in own_pids) + _self_cpu()
        time.sleep(window_s)
        used = (system_busy_cpu() - busy0) - (
            sum(process_cpu_seconds(p) for p in own_pids) + _self_cpu() - own0
        )
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
    cwd: Path | None = None,
    broker_pid: int | None = None,
    on_sample: Callable[[float, int, float], None] | None = None,
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
    procs: list[subprocess.Popen] = []
    started_wall = time.time()
    started = time.monotonic()
    for i, cmd in enumerate(commands):
        path = log_path if len(commands) == 1 else log_path.with_suffix(f".p{i}.log")
        fh = open(path, "wb")  # noqa: SIM115 - open while the process runs; closed below
        logs.append(fh)
        procs.append(
            subprocess.Popen(
                list(cmd),
                env=dict(env),
                cwd=str(cwd or REPO),
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
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
