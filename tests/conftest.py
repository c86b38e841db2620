"""Shared fixtures: one real Kafka-protocol broker (Tansu) per test session."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from clickstream.broker import LocalBroker  # noqa: E402

# Tests start jobs as everything else does: through the one launcher
# (job_command(job, *bytewax_args); recovery and cluster settings from the env).
from clickstream.launch import launcher_command as job_command  # noqa: E402,F401

_names = itertools.count()


@pytest.fixture(scope="session")
def broker():
    """A real broker on a free loopback port, stopped at the end of the session."""
    with LocalBroker.start() as running:
        yield running


@pytest.fixture
def topic_names(request):
    """Unique topic names per test, so tests sharing the broker never collide."""

    def make(*bases: str) -> dict:
        n = next(_names)
        test = request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:40]
        return {base: f"{test}_{n}_{base}" for base in bases}

    return make


def clicks_job_env(broker, topics: dict, **extra: str) -> dict:
    """The environment of a finite (``KAFKA_TAIL=false``) clicks job started
    through the launcher: the ``clicks``, ``profiles``, ``joined``,
    ``unmatched`` and ``dlq`` names of ``topics`` (from ``topic_names``), then ``extra``."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TAIL": "false",
        "CLICKS_TOPIC": topics["clicks"],
        "PROFILES_TOPIC": topics["profiles"],
        "JOINED_TOPIC": topics["joined"],
        "UNMATCHED_TOPIC": topics["unmatched"],
        "DLQ_TOPIC": topics["dlq"],
        **extra,
    }
