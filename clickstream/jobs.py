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
