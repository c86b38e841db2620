"""Which dead letters to replay, and what to produce for each: the pure part
of :mod:`clickstream.dlq_replay` (no Kafka)."""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from clickstream.read_topic import Record
from clickstream.tooling import UsageError, preview

#: Prefix of every header the dead-letter writer adds (and the replay removes).
DLQ_HEADER_PREFIX = "dlq."
#: Header naming the dead letter a replayed record came from.
REPLAYED_FROM = "dlq.replayed_from"
#: The first header of the dead-letter writer's block.
DLQ_ERROR = "dlq.error"
#: Shown when a dead letter lacks a header.
MISSING = "<none>"

HeaderList = list[tuple[str, bytes | None]]


def header_text(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str | None:
    """The value of header ``name`` as text (the last one if repeated), or None.

    The last one, because the dead-letter writer appends its headers after
    the original ones.
    """
    found: bytes | None = None
    seen = False
    for key, value in headers or ():
        if key == name:
            found, seen = value, True
    if not seen or found is None:
        return None
    return found.decode("utf-8", "replace")


@dataclasses.dataclass(frozen=True)
class Filters:
    """Which dead letters to replay. An empty set means "any"."""

    reasons: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    source_topics: frozenset[str] = frozenset()

    def matches(self, headers: Sequence[tuple[str, bytes | None]] | None) -> bool:
        for wanted, name in (
            (self.reasons, "dlq.reason"),
            (self.stages, "dlq.stage"),
            (self.source_topics, "dlq.topic"),
        ):
            if wanted and header_text(headers, name) not in wanted:
                return False
        return True

    def describe(self) -> str:
        parts = [
            f"{flag} in {{{', '.join(sorted(values))}}}"
            for flag, values in (
                ("reason", self.reasons),
                ("stage", self.stages),
                ("source topic", self.source_topics),
            )
            if values
        ]
        return "; ".join(parts) if parts else "none (every dead letter)"


def original_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> HeaderList:
    """The rejected record's own headers (order and repeats kept), minus ``dlq.*``.

    The dead-letter writer appends its block (``dlq.error`` first) after the
    original headers, and the output sink may append transport headers after
    that block (e.g. the exactly-once ``lineage`` id): only what precedes the
    last ``dlq.error`` is original. Without a ``dlq.error`` header every header
    counts as original. ``dlq.*`` headers among the originals (the
    ``dlq.replayed_from`` of an earlier replay) are dropped too.
    """
    items = list(headers or ())
    cut = max((i for i, (key, _) in enumerate(items) if key == DLQ_ERROR), default=None)
    if cut is not None:
        items = items[:cut]
    return [(key, value) for key, value in items if not key.startswith(DLQ_HEADER_PREFIX)]


def replay_headers(
    headers: Sequence[tuple[str, bytes | None]] | None,
    dlq_topic: str,
    partition: int,
    offset: int,
) -> HeaderList:
    """:func:`original_headers` plus ``dlq.replayed_from = <dlq topic>/<partition>/<offset>``."""
    kept = original_headers(headers)
    kept.append((REPLAYED_FROM, f"{dlq_topic}/{partition}/{offset}".encode()))
    return kept


class ReplayItem(NamedTuple):
    """One dead letter selected for replay, and the record to produce for it."""

    #: The dead letter as read from the DLQ topic.
    dead_letter: Record
    reason: str
    stage: str
    #: Header ``dlq.topic``, or None when absent.
    source_topic: str | None
    #: Where it goes: ``--to-topic`` or the source topic (None: nowhere known).
    target: str | None
    key: bytes | None
    value: bytes | None
    headers: HeaderList
    #: Explicit message timestamp (epoch ms), or None for the producer's clock.
    timestamp_ms: int | None

    @property
    def origin(self) -> str:
        """``<dlq topic>/<partition>/<offset>`` of the dead letter."""
        d = self.dead_letter
        return f"{d.topic}/{d.partition}/{d.offset}"


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def replay_item(record: Record, to_topic: str | None = None, keep_timestamps: bool = True) -> ReplayItem:
    """What to produce for one dead letter."""
    headers = record.headers or []
    source = header_text(headers, "dlq.topic")
    timestamp = _int_or_none(header_text(headers, "dlq.timestamp")) if keep_timestamps else None
    if timestamp is not None and timestamp <= 0:
        timestamp = None
    return ReplayItem(
        dead_letter=record,
        reason=header_text(headers, "dlq.reason") or MISSING,
        stage=header_text(headers, "dlq.stage") or MISSING,
        source_topic=source,
        target=to_topic or source,
        key=record.key,
        value=record.value,
        headers=replay_headers(headers, record.topic, record.partition, record.offset),
        timestamp_ms=timestamp,
    )


@dataclasses.dataclass
class Plan:
    """The dead letters read and the ones selected for replay."""

    dlq_topic: str
    filters: Filters = dataclasses.field(default_factory=Filters)
    to_topic: str | None = None
    limit: int | None = None
    read: int = 0
    #: Dead letters matching the filters (before ``limit``).
    matched: int = 0
    items: list[ReplayItem] = dataclasses.field(default_factory=list)

    @property
    def selected(self) -> int:
        return len(self.items)

    @property
    def unroutable(self) -> list[ReplayItem]:
        return [item for item in self.items if item.target is None]

    @property
    def targets(self) -> list[str]:
        return sorted({item.target for item in self.items if item.target is not None})

    def by_source_and_reason(self) -> Counter:
        return Counter((item.source_topic or MISSING, item.reason) for item in self.items)

    def by_target(self) -> Counter:
        return Counter(item.target or MISSING for item in self.items)


def plan_replay(
    records: Iterable[Record],
    dlq_topic: str,
    filters: Filters = Filters(),
    to_topic: str | None = None,
    limit: int | None = None,
    keep_timestamps: bool = True,
) -> Plan:
    """Read every record (so the counts are complete); select the matching ones
    in (partition, offset) order, the first ``limit`` of them if given.

    Memory holds the selected records only (a bounded heap with ``limit``).
    """
    plan = Plan(dlq_topic=dlq_topic, filters=filters, to_topic=to_topic, limit=limit)
    # Max-heap on (partition, offset) of the best `limit` matches so far.
    kept: list[tuple[int, int, int, Record]] = []
    for n, record in enumerate(records):
        plan.read += 1
        if not filters.matches(record.headers):
            continue
        plan.matched += 1
        entry = (-record.partition, -record.offset, n, record)
        if limit is None or len(kept) < limit:
            heapq.heappush(kept, entry)
        elif limit > 0 and entry > kept[0]:
            heapq.heapreplace(kept, entry)
    ordered = sorted((r for *_, r in kept), key=lambda r: (r.partition, r.offset))
    plan.items = [replay_item(r, to_topic, keep_timestamps) for r in ordered]
    return plan


def format_item(item: ReplayItem, width: int = 60) -> str:
    """``p0@5 reason=missing_user_id from=user_clicks/1/17 -> user_clicks key=... value=...``."""
    d = item.dead_letter
    src = MISSING
    if item.source_topic is not None:
        src = (
            f"{item.source_topic}/{header_text(d.headers, 'dlq.partition') or '?'}"
            f"/{header_text(d.headers, 'dlq.offset') or '?'}"
        )
    size = "null" if item.value is None else f"{len(item.value)} bytes"
    return (
        f"p{d.partition}@{d.offset} reason={item.reason} from={src} "
        f"-> {item.target or MISSING} key={preview(item.key, 40)} "
        f"value={preview(item.value, width)} ({size})"
    )


def check_plan(plan: Plan) -> None:
    """Refuse plans that cannot be replayed as a whole (raises :class:`UsageError`)."""
    unroutable = plan.unroutable
    if unroutable:
        raise UsageError(
            f"{len(unroutable)} selected record(s) have no dlq.topic header (first: "
            f"{unroutable[0].origin}); give --to-topic or filter them out"
        )
    if plan.dlq_topic in plan.targets:
        raise UsageError(f"refusing to replay into the dead-letter topic {plan.dlq_topic!r} itself")
