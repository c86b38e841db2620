"""``asof_join``: enrich each click with the profile version valid at its event time.

Semantics
---------
A click with event time ``T`` is matched with its user's profile version whose
event time ``V`` is the latest one ``<= T``, provided ``T - V <= ttl``;
otherwise it is unmatched. Each click yields exactly one :class:`JoinResult`.

The result must not depend on how the reading of the two topics interleaves.
So a click is *resolved* only once the profiles input as a whole has passed
its event time (the profile watermark reaches ``T``), or once it has waited
``wait`` of processing time, or at end of input, whichever comes first.

How the watermark works
-----------------------
See :mod:`operators.progress`: state lives in shards, and every shard tracks
the watermark of both inputs from the position reports of the sources.

State stays bounded: with ``H`` = click watermark minus ``lateness`` (and never
past the oldest click still waiting), a version superseded by one at or before
``H`` is dropped, and a user whose newest version expired before ``H`` is
dropped entirely.

Snapshots
---------
Bytewax calls ``snapshot()`` at every epoch, with or without recovery, and
pickles the state only with recovery on. The profile versions are most of it:
a snapshot holds them as a :class:`~operators.version_snapshot.VersionSnapshot`
(a shallow copy, pickled only when Bytewax pickles it, and then only the
buckets of users that changed). The expiry heap is not snapshotted; it is
rebuilt from the versions on restore.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream, operator  # noqa: F401 - Dataflow: the docstring example

from operators.metrics import EVICTIONS, STATE_SIZE
from operators.progress import CLICKS, PROFILES, InputProgress, ShardInput, ShardRouter
from operators.records import (
    END_OF_TIME_MS,
    Click,
    DecodedBatch,
    JoinResult,
    ProfileVersion,
    new_join_result,
)
from operators.version_snapshot import BucketCache, VersionSnapshot, restored_blobs

STATE_USERS = STATE_SIZE.labels("join_users", "all")
STATE_PENDING = STATE_SIZE.labels("join_waiting_clicks", "all")


class AsofJoinState(NamedTuple):
    """What a shard snapshots for recovery (all values immutable or copied)."""

    #: The versions: a :class:`VersionSnapshot` when taken, which pickles as
    #: (and is restored as) a tuple of pickled ``{user_id: versions}`` buckets.
    version_buckets: VersionSnapshot | tuple[bytes, ...]
    pending: dict[int, tuple[Click, float]]
    seq: int
    clicks_progress: tuple
    profiles_progress: tuple


class AsofJoinLogic(op.StatefulBatchLogic):
    """One shard of the as-of join: profile versions and clicks waiting to resolve."""

    def __init__(self, ttl_ms: int, wait_s: float, lateness_ms: int, state: AsofJoinState | None):
        self.ttl_ms = ttl_ms
        self.wait_s = wait_s
        self.lateness_ms = lateness_ms
        self.versions: dict[str, tuple[ProfileVersion, ...]] = {}
        self.expiry: list[tuple[int, str]] = []
        #: The buckets this shard pickled last (see `snapshot`).
        self.bucket_cache = BucketCache()
        if state is None:
            self.pending: dict[int, tuple[Click, float]] = {}
            self.seq = 0
            self.clicks = InputProgress()
            self.profiles = InputProgress()
        else:
            self.versions = self.bucket_cache.remember(restored_blobs(state.version_buckets))
            # Every version gets an expiry entry (see `_insert`); entries that
            # had already popped are harmless: eviction re-checks the user.
            self.expiry = [(v.ts_ms + ttl_ms, user) for user, vs in self.versions.items() for v in vs]
            heapq.heapify(self.expiry)
            self.pending = dict(state.pending)
            self.seq = state.seq
            self.clicks = InputProgress(state.clicks_progress)
            self.profiles = InputProgress(state.profiles_progress)
        # Indexes over `pending`, rebuilt on restore; stale entries are skipped.
        self.by_time: list[tuple[int, int]] = [(c.ts_ms, s) for s, (c, _) in self.pending.items()]
        heapq.heapify(self.by_time)
        self.by_deadline = deque(sorted(((d, s) for s, (_, d) in self.pending.items())))
        #: Counters for observability (not snapshotted).
        self.evicted_versions = 0
        self._reported_users = 0
        self._reported_pending = 0

    # -- profiles ---------------------------------------------------------
    def _insert(self, version: ProfileVersion, horizon: int) -> None:
        user = version.key
        versions = self.versions.get(user)
        ts = version.ts_ms
        # Every version gets an expiry entry: when it pops, the user's
        # superseded versions are trimmed or the whole user is dropped.
        heapq.heappush(self.expiry, (ts + self.ttl_ms, user))
        if not versions or ts > versions[-1].ts_ms:
            versions = (versions or ()) + (version,)
        else:
            # Out of order or same time: keep sorted; the later read wins a tie.
            kept = [v for v in versions if v.ts_ms != ts]
            kept.append(version)
            kept.sort(key=lambda v: v.ts_ms)
            versions = tuple(kept)
        while len(versions) > 1 and versions[1].ts_ms <= horizon:
            versions = versions[1:]
            self.evicted_versions += 1
        self.versions[user] = versions

    # -- clicks -----------------------------------------------------------
    def _resolve(self, click: Click) -> JoinResult:
        versions = self.versions.get(click.key)
        if versions:
            ts = click.ts_ms
            for version in reversed(versions):
                if version.ts_ms <= ts:
                    if ts - version.ts_ms <= self.ttl_ms:
                        return new_join_result((click, version))
                    break
        return new_join_result((click, None))

    def _resolve_ready(self, out: list[JoinResult]) -> None:
        watermark = self.profiles.watermark
        by_time = self.by_time
        pending = self.pending
        while by_time and by_time[0][0] <= watermark:
            _, seq = heapq.heappop(by_time)
            entry = pending.pop(seq, None)
            if entry is not None:
                out.append(self._resolve(entry[0]))

    def _horizon(self) -> int:
        horizon = self.clicks.watermark
        if horizon >= END_OF_TIME_MS:
            horizon = END_OF_TIME_MS
        else:
            horizon -= self.lateness_ms
        by_time = self.by_time
        while by_time and by_time[0][1] not in self.pending:
            heapq.heappop(by_time)
        if by_time and by_time[0][0] < horizon:
            horizon = by_time[0][0]
        return horizon

    def _evict(self, horizon: int) -> None:
        expiry = self.expiry
        versions = self.versions
        ttl = self.ttl_ms
        while expiry and expiry[0][0] < horizon:
            _, user = heapq.heappop(expiry)
            current = versions.get(user)
            if current is None:
                continue
            if current[-1].ts_ms + ttl < horizon:
                del versions[user]
                self.evicted_versions += len(current)
            elif len(current) > 1 and current[1].ts_ms <= horizon:
                kept = current
                while len(kept) > 1 and kept[1].ts_ms <= horizon:
                    kept = kept[1:]
                versions[user] = kept
                self.evicted_versions += len(current) - len(kept)

    # -- Bytewax callbacks -------------------------------------------------
    def on_batch(self, values: list[ShardInput]):
        out: list[JoinResult] = []
        horizon = self._horizon()
        for inp in values:
            if inp.side == PROFILES:
                for version in inp.items:
                    self._insert(version, horizon)
                self.profiles.update(inp)
            else:
                if inp.items:
                    watermark = self.profiles.watermark
                    deadline = time.time() + self.wait_s
                    versions_of, ttl, append = self.versions.get, self.ttl_ms, out.append
                    for click in inp.items:
                        ts = click.ts_ms
                        if ts <= watermark:
                            # `_resolve`, inline: once per click on the hot path.
                            found: ProfileVersion | None = None
                            versions = versions_of(click.key)
                            if versions:
                                for version in reversed(versions):
                                    if version.ts_ms <= ts:
                                        if ts - version.ts_ms <= ttl:
                                            found = version
                                        break
                            append(new_join_result((click, found)))
                        else:
                            seq = self.seq
                            self.seq = seq + 1
                            self.pending[seq] = (click, deadline)
                            heapq.heappush(self.by_time, (click.ts_ms, seq))
                            self.by_deadline.append((deadline, seq))
                self.clicks.update(inp)
            self._resolve_ready(out)
        self._evict(self._horizon())
        self._report()
        return ([out] if out else []), False

    def _report(self) -> None:
        """Push eviction counts and state-size changes to the metrics."""
        if self.evicted_versions:
            EVICTIONS.inc(self.evicted_versions)
            self.evicted_versions = 0
        users, pending = len(self.versions), len(self.pending)
        if users != self._reported_users:
            STATE_USERS.inc(users - self._reported_users)
            self._reported_users = users
        if pending != self._reported_pending:
            STATE_PENDING.inc(pending - self._reported_pending)
            self._reported_pending = pending

    def on_notify(self):
        out: list[JoinResult] = []
        now = time.time()
        by_deadline = self.by_deadline
        pending = self.pending
        while by_deadline and by_deadline[0][0] <= now:
            _, seq = by_deadline.popleft()
            entry = pending.pop(seq, None)
            if entry is not None:
                out.append(self._resolve(entry[0]))
        self._evict(self._horizon())
        self._report()
        return ([out] if out else []), False

    def on_eof(self):
        out = [self._resolve(click) for click, _ in self.pending.values()]
        self.pending.clear()
        self.by_time.clear()
        self.by_deadline.clear()
        return ([out] if out else []), False

    def notify_at(self) -> datetime | None:
        by_deadline = self.by_deadline
        while by_deadline and by_deadline[0][1] not in self.pending:
            by_deadline.popleft()
        if not by_deadline:
            return None
        return datetime.fromtimestamp(by_deadline[0][0], tz=UTC)

    def snapshot(self) -> AsofJoinState:
        return AsofJoinState(
            VersionSnapshot(self.versions, self.bucket_cache),
            dict(self.pending),
            self.seq,
            self.clicks.snapshot(),
            self.profiles.snapshot(),
        )

    def state_size(self) -> tuple[int, int, int]:
        """(users, profile versions, clicks waiting) held by this shard."""
        return (
            len(self.versions),
            sum(len(v) for v in self.versions.values()),
            len(self.pending),
        )


@dataclass(frozen=True)
class AsofJoinOut:
    """Resolved clicks, in lists (one list per shard activation)."""

    joined: Stream[list[JoinResult]]


@operator
def asof_join(
    step_id: str,
    clicks: Stream[DecodedBatch],
    profiles: Stream[DecodedBatch],
    *,
    ttl: timedelta,
    wait: timedelta,
    lateness: timedelta,
    shards: int = 16,
    progress_interval: timedelta = timedelta(milliseconds=100),
    live_profiles_interval: timedelta = timedelta(milliseconds=20),
) -> AsofJoinOut:
    """Event-time as-of join of decoded click batches with profile batches.

    :arg ttl: a version older than this at the click's event time does not match.
    :arg wait: processing time a click waits for the profile watermark.
    :arg lateness: how far behind the click watermark clicks may still arrive
        and find the versions they need (older versions are evicted).
    :arg shards: number of state shards; keep it fixed for a recovery store.
    :arg progress_interval: least time between two broadcasts of an input
        partition's position to every shard.
    :arg live_profiles_interval: the same for a caught-up (tailing) profiles
        partition. A live click waits until the profiles watermark passes its
        time, i.e. for the next broadcast, so this bounds that wait; the
        profiles source's heartbeat should be as short (see
        ``dataflows.clicks``).

    Example: ann's click at 5 s meets her version from 1 s, not the one from
    9 s; bob has no version; each click yields one result:

    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> from operators.testing import batch, event, finished
    >>> flow = Dataflow("asof_example")
    >>> clicks = op.input("clicks", flow, TestingSource([
    ...     batch("clicks", [event("ann", 5_000, b'{"page":"/"}'), event("bob", 6_000)]),
    ...     finished("clicks")]))
    >>> profiles = op.input("profiles", flow, TestingSource([
    ...     batch("profiles", [event("ann", 1_000, b'{"tier":"free"}', topic="profiles"),
    ...                        event("ann", 9_000, b'{"tier":"gold"}', topic="profiles")]),
    ...     finished("profiles")]))
    >>> joined = asof_join("join", clicks, profiles, ttl=timedelta(hours=1),
    ...                    wait=timedelta(seconds=10), lateness=timedelta(0), shards=2).joined
    >>> out = []
    >>> op.output("out", joined, TestingSink(out))
    >>> run_main(flow)
    >>> sorted((r.click.key, r.click.ts_ms, r.profile and r.profile.value) for rs in out for r in rs)
    [('ann', 5000, b'{"tier":"free"}'), ('bob', 6000, None)]
    """
    if shards < 1:
        raise ValueError("shards must be >= 1")
    interval_s = progress_interval.total_seconds()
    click_router = ShardRouter(CLICKS, shards, interval_s)
    profile_router = ShardRouter(PROFILES, shards, interval_s, live_profiles_interval.total_seconds())
    keyed_clicks = op.flat_map("route_clicks", clicks, click_router.route)
    keyed_profiles = op.flat_map("route_profiles", profiles, profile_router.route)
    keyed = op.merge("merge", keyed_clicks, keyed_profiles)
    ttl_ms = int(ttl.total_seconds() * 1000)
    lateness_ms = int(lateness.total_seconds() * 1000)
    wait_s = wait.total_seconds()
    joined = op.stateful_batch(
        "shards",
        keyed,
        lambda state: AsofJoinLogic(ttl_ms, wait_s, lateness_ms, state),
    )
    return AsofJoinOut(op.key_rm("unkey", joined))
