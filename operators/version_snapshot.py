"""Snapshots of the as-of join's profile versions that cost nothing unless pickled.

Bytewax calls a stateful step's ``snapshot()`` at the end of every epoch,
with or without recovery, and pickles the result only when recovery is on
(measured on 0.21.1). The versions are most of a join shard's state, so
:class:`VersionSnapshot` takes a shallow copy of them (a C-level dict copy:
the values are immutable tuples of immutable events, so the copy stays exact
however the shard changes afterwards) and does the real work only when
pickled: it splits the users into ``SNAPSHOT_BUCKETS`` buckets and pickles
only the buckets that differ from the ones the shard pickled last time
(:class:`BucketCache`); an unchanged bucket reuses its bytes.

A snapshot pickles as a plain tuple of ``SNAPSHOT_BUCKETS`` pickled
``{user_id: versions}`` dicts, and that is what a restore receives. Versions
are pickled as plain tuples of their fields (a NamedTuple pickles through a
Python call per object, a plain tuple in C: about 2.5 times cheaper) and
rebuilt as events on restore; stores that pickled the events themselves
restore too.
"""

from __future__ import annotations

import pickle
import threading
import zlib

from operators.records import Event, ProfileVersion, new_event

#: Buckets of users per shard, each pickled and cached on its own for snapshots.
SNAPSHOT_BUCKETS = 256

Versions = dict[str, tuple[ProfileVersion, ...]]


def snapshot_bucket(user_id: str) -> int:
    """A user's snapshot bucket within its shard (stable across processes)."""
    return (zlib.crc32(user_id.encode()) >> 8) % SNAPSHOT_BUCKETS


class BucketCache:
    """Per bucket, the ``{user: versions}`` a shard pickled last and its bytes."""

    __slots__ = ("blobs", "buckets", "lock")

    def __init__(self) -> None:
        self.buckets: list[Versions | None] = [None] * SNAPSHOT_BUCKETS
        self.blobs: list[bytes] = [b""] * SNAPSHOT_BUCKETS
        #: Bytewax pickles in the worker thread; the lock keeps two snapshots
        #: pickled on other threads from mixing their buckets all the same.
        self.lock = threading.Lock()

    def remember(self, blobs: tuple[bytes, ...]) -> Versions:
        """Seed the cache from restored buckets; return all their versions."""
        versions: Versions = {}
        for index, blob in enumerate(blobs):
            bucket = _events(pickle.loads(blob))
            self.buckets[index] = bucket
            self.blobs[index] = blob
            versions.update(bucket)
        return versions


class VersionSnapshot:
    """A shard's versions at one snapshot; pickled lazily (module docstring)."""

    __slots__ = ("_blobs", "cache", "versions")

    def __init__(self, versions: Versions, cache: BucketCache):
        self.versions: Versions | None = dict(versions)
        self.cache = cache
        self._blobs: tuple[bytes, ...] | None = None

    def blobs(self) -> tuple[bytes, ...]:
        """The pickled buckets (computed once)."""
        if self._blobs is None:
            assert self.versions is not None
            buckets: list[Versions] = [{} for _ in range(SNAPSHOT_BUCKETS)]
            crc32 = zlib.crc32
            for user, versions in self.versions.items():
                buckets[(crc32(user.encode()) >> 8) % SNAPSHOT_BUCKETS][user] = versions
            cache = self.cache
            with cache.lock:
                for index, bucket in enumerate(buckets):
                    # Equal values are mostly the very same tuples: a fast compare.
                    if cache.buckets[index] != bucket:
                        cache.buckets[index] = bucket
                        cache.blobs[index] = pickle.dumps(_rows(bucket), pickle.HIGHEST_PROTOCOL)
                self._blobs = tuple(cache.blobs)
            self.versions = None
        return self._blobs

    def __reduce__(self):
        return (tuple, (self.blobs(),))


def _rows(bucket: Versions) -> dict[str, tuple[tuple, ...]]:
    return {user: tuple(map(tuple, versions)) for user, versions in bucket.items()}


def _events(bucket: dict[str, tuple]) -> Versions:
    """A bucket's versions as events (pickled as rows, or as events by older stores)."""
    return {
        user: versions if versions and type(versions[0]) is Event else tuple(map(new_event, versions))
        for user, versions in bucket.items()
    }


def pickled_versions(blob: bytes) -> Versions:
    """The ``{user_id: versions}`` of one pickled bucket (tests, tools)."""
    return _events(pickle.loads(blob))


def restored_blobs(saved: VersionSnapshot | tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The pickled buckets of a snapshot, restored by Bytewax or taken in process."""
    return saved.blobs() if type(saved) is VersionSnapshot else saved  # type: ignore[return-value]
