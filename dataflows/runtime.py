"""The process-wide side effects of running a job, in one explicit start-up
call (:func:`start_job_runtime`): logging and the start-up line, GC tuning,
the metrics and health HTTP server (``/metrics``, ``/healthz``), the stall
watch, the periodic progress log line, and a clean stop on SIGTERM / SIGINT
(:func:`install_stop_handlers`)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from dataflows.settings import CommonSettings, KafkaConnection
from operators.health import StallMonitor


def start_job_runtime(job: str, settings: CommonSettings, kafka: KafkaConnection) -> None:
    """The process-wide side effects of running ``job``, once, before its flow
    is built: logging (and the start-up line with the redacted settings), the
    GC tuning, the metrics server and the progress-log thread."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger(f"dataflows.{job}").info(
        "%s job: tail=%s kafka=%s clicks=%s",
        job,
        settings.kafka_tail,
        kafka.redacted(),
        settings.clicks_mapping(),
    )
    tune_gc()
    install_stop_handlers(job)
    monitor = StallMonitor(settings.health_stall_seconds)
    start_stall_watch(monitor)
    serve_metrics(settings.metrics_port, monitor)
    start_progress_log(job, settings.progress_interval_seconds)


def install_stop_handlers(job: str) -> None:
    """SIGTERM and SIGINT stop the job at once with exit status 0.

    A process that is PID 1 in a container has no default SIGTERM action at
    all, so a pod deletion used to wait for the grace period and end in
    SIGKILL. Here both signals end the process on the spot, with one log line
    and status 0. The stop is like a crash for the outputs: recovery resumes
    from the last snapshot and the exactly-once sink skips what was already
    written, so a restart is exact (tested). It does not let Bytewax wind the
    dataflow down (raising from the handler, as the default SIGINT handler
    does): in a multi-process cluster a process that winds down waits for
    its peers forever, and they for it; an abrupt exit makes the peers exit
    non-zero at once, as when a peer dies, so that they are restarted.
    """
    log = logging.getLogger(f"dataflows.{job}")

    def stop(signum: int, _frame: object) -> None:
        log.info(
            "%s: stopped by %s; a restart resumes from the last snapshot",
            job,
            signal.Signals(signum).name,
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)
    except ValueError:  # not the main thread (a flow built inside a test): leave signals alone
        return


def tune_gc() -> None:
    """Make Python's cyclic GC cheap for a streaming job.

    Every record allocates a few short-lived tuples, and state holds many
    long-lived ones; with the default thresholds the collector ran so often
    that it took over a tenth of the CPU in the clicks job. Records and state
    here form no reference cycles, so collect rarely, and move everything
    allocated at start-up out of the collector's view (without collecting
    first: that full pass over the start-up objects took ~0.1 s, and what it
    would free is a little garbage from imports).
    """
    gc.freeze()
    gc.set_threshold(200_000, 50, 1000)


log = logging.getLogger("clickstream.progress")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: probes and scrapes would fill it."""


def health_and_metrics_app(monitor: StallMonitor | None) -> Callable[..., Iterable[bytes]]:
    """WSGI app: ``/healthz`` (200 ``ok``, or 503 and the one-line reason the
    job is stalled), anything else Prometheus metrics."""
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            return metrics(environ, start_response)
        reason = monitor.check() if monitor is not None else None
        body = b"ok\n" if reason is None else reason.encode() + b"\n"
        status = "200 OK" if reason is None else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body]

    return app


def serve_metrics(port: int, monitor: StallMonitor | None = None) -> None:
    """Serve ``/metrics`` and ``/healthz`` on ``port`` (0: do not serve)."""
    if port:
        server = make_server("", port, health_and_metrics_app(monitor), ThreadingWSGIServer, _QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        log.info("metrics on http://0.0.0.0:%d/metrics, health on /healthz", port)


def start_stall_watch(monitor: StallMonitor) -> threading.Thread:
    """Check for a stall a few times per ``HEALTH_STALL_SECONDS`` (at most every
    5 s), so the log says when the job stalls even if nothing probes it."""
    interval_s = min(monitor.stall_s / 4, 5.0)

    def run() -> None:
        while True:
            time.sleep(interval_s)
            monitor.check()

    thread = threading.Thread(target=run, name="stall-watch", daemon=True)
    thread.start()
    return thread


def _total(name: str) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == name:
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    total += sample.value
    return total


def start_progress_log(job: str, interval_s: float) -> threading.Thread | None:
    """Log one progress line every ``interval_s``: records in and out, and rates."""
    if interval_s <= 0:
        return None

    def run() -> None:
        last: dict[str, float] = {}
        last_t = time.monotonic()
        while True:
            time.sleep(interval_s)
            now = time.monotonic()
            current = {
                "in": _total("clickstream_records_in"),
                "joined": _total("clickstream_joined"),
                "unmatched": _total("clickstream_unmatched"),
                "dead": _total("clickstream_dead_lettered"),
                "late": _total("clickstream_late"),
                "results": _total("clickstream_results"),
            }
            elapsed = max(now - last_t, 1e-9)
            rate = (current["in"] - last.get("in", 0.0)) / elapsed
            log.info(
                "%s progress: in=%d (%.0f/s) joined=%d unmatched=%d dead_lettered=%d late=%d results=%d",
                job,
                current["in"],
                rate,
                current["joined"],
                current["unmatched"],
                current["dead"],
                current["late"],
                current["results"],
            )
            last, last_t = current, now

    thread = threading.Thread(target=run, name="progress-log", daemon=True)
    thread.start()
    return thread
