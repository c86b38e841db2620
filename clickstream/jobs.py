"""The job registry: which modules of ``dataflows`` are jobs.

A job is a module of the ``dataflows`` package that defines a flow: a
``flow`` attribute, or ``flow_from_env`` (the modules build ``flow`` lazily
from the environment on first use, see ``dataflows.common.lazy_flow``).
``dataflows.common`` defines none, so it is not a job. Importing a job module
reads no environment and builds nothing.

Everything that names jobs uses this list: the launcher
(``python -m clickstream.launch``), the container entrypoint, the demo, the
benchmarks and the tests. A new job is a new module; nothing else to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any


def job_module(job: str) -> str:
    """The import path ``bytewax.run`` is given: ``clicks`` -> ``dataflows.clicks``."""
    return f"dataflows.{job}"


def available_jobs() -> list[str]:
    """Names of the job modules of ``dataflows``, sorted."""
    import dataflows

    jobs = []
    for info in pkgutil.iter_modules(dataflows.__path__):
        if info.name.startswith("_") or info.ispkg:
            continue
        names = vars(importlib.import_module(job_module(info.name)))
        if "flow" in names or "flow_from_env" in names:
            jobs.append(info.name)
    return sorted(jobs)


@dataclass(frozen=True)
class JobInput:
    """One Kafka input of a job: its step (as the recovery store names it),
    topic and the consumer group its offsets are committed to."""

    step_id: str
    topic: str
    group_id: str | None


def job_inputs(job: str, settings: Any, kafka: Any) -> list[JobInput]:
    """The Kafka inputs ``job`` reads with these settings, found in its
    dataflow (built, not run: nothing connects to Kafka)."""
    from connectors.kafka_source import KafkaBatchSource

    module = importlib.import_module(job_module(job))
    # clicks defines build_flow; the windowed jobs are a _windowed.WindowedJob
    build = getattr(module, "build_flow", None) or module.JOB.build_flow
    inputs: list[JobInput] = []

    def walk(step: Any) -> None:
        for sub in step.substeps:
            source = getattr(sub, "source", None)
            if isinstance(source, KafkaBatchSource):
                inputs.append(JobInput(sub.step_id, source.topic, source.group_id))
            walk(sub)

    walk(build(settings, kafka))
    return inputs
