"""Helpers for story tests: readable clicks, profiles and batches, and a runner.

Times in stories are seconds after ``T0``; every click and profile carries a
small JSON body whose fields make the expected output easy to read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from operators import testing
from operators.asof_join import asof_join
from operators.records import (
    Click,
    DecodedBatch,
    JoinResult,
    PartitionStatus,
    ProfileVersion,
)

#: 2026-01-01T00:00:00Z in epoch ms.
T0 = 1_767_225_600_000
CLICKS_TOPIC = "user_clicks"
PROFILES_TOPIC = "user_profiles"


def click(user: str, at_s: float, name: str, partition: int = 0) -> Click:
    """A click by ``user`` at T0 + ``at_s``; ``name`` identifies it in results."""
    value = orjson.dumps({"user_id": user, "ts": T0 + int(at_s * 1000), "name": name})
    return Click(user, T0 + int(at_s * 1000), value, CLICKS_TOPIC, partition, _offset(name))


def profile(user: str, at_s: float, tier: str, partition: int = 0) -> ProfileVersion:
    """A profile version of ``user`` valid from T0 + ``at_s``, identified by ``tier``."""
    value = orjson.dumps({"user_id": user, "updated_at": T0 + int(at_s * 1000), "tier": tier})
    return ProfileVersion(user, T0 + int(at_s * 1000), value, PROFILES_TOPIC, partition, 0)


def _offset(name: str) -> int:
    return int.from_bytes(name.encode()[:6].ljust(6, b"\0"), "big")


def batch(
    topic: str,
    items: Sequence,
    *,
    partition: int = 0,
    partitions: int = 1,
    status: PartitionStatus = PartitionStatus.READING,
    polled_at_ms: int = T0,
) -> DecodedBatch:
    return testing.batch(
        topic, items, partition=partition, partitions=partitions, status=status, polled_at_ms=polled_at_ms
    )


def finished(topic: str, partition: int = 0, partitions: int = 1) -> DecodedBatch:
    return testing.finished(topic, partition=partition, partitions=partitions)


def polls(topic: str, *groups: Sequence, partition: int = 0, partitions: int = 1, end: bool = True) -> list:
    """One READING batch per group, then (by default) the partition's end."""
    out: list = [batch(topic, g, partition=partition, partitions=partitions) for g in groups]
    if end:
        out.append(finished(topic, partition, partitions))
    return out


def summarise(results: Iterable[JoinResult]) -> list[tuple[str, str, str | None]]:
    """(user, click name, matched tier or None), sorted: the readable join outcome."""
    out = []
    for result in results:
        name = orjson.loads(result.click.value)["name"]
        tier = None if result.profile is None else orjson.loads(result.profile.value)["tier"]
        out.append((result.click.key, name, tier))
    return sorted(out, key=lambda t: (t[0], t[1]))


def run_asof(
    click_input: list,
    profile_input: list,
    *,
    ttl_s: float = 3600,
    wait_s: float = 30,
    lateness_s: float = 60,
    shards: int = 4,
    workers: int = 1,
) -> list[JoinResult]:
    """Run the as-of join on TestingSource inputs; return every result."""
    flow = Dataflow("asof_story")
    clicks = op.input("clicks", flow, TestingSource(click_input))
    profiles = op.input("profiles", flow, TestingSource(profile_input))
    joined = asof_join(
        "join",
        clicks,
        profiles,
        ttl=timedelta(seconds=ttl_s),
        wait=timedelta(seconds=wait_s),
        lateness=timedelta(seconds=lateness_s),
        shards=shards,
    ).joined
    captured: list = []
    op.output("out", joined, TestingSink(captured))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return [result for results in captured for result in results]
