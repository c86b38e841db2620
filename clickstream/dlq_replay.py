"""Replay dead letters: re-produce the original records of a DLQ topic.

``python -m clickstream.dlq_replay [--reason R]... [--stage S]... [--source-topic T]...
[--to-topic T] [--limit N] [--dry-run] [--show N]``

The dead-letter topic (``--dlq-topic``, default ``$DLQ_TOPIC`` or
``dead_letters``) is read from its beginning to its end (the end confirmed as
in :mod:`clickstream.read_topic`). Each dead letter that passes the filters is
re-produced with its **original value bytes** (a null value stays null) and its
original key, to its source topic (header ``dlq.topic``) or to ``--to-topic``:

* headers: the original ones (those before the dead-letter writer's
  ``dlq.error``; headers an output sink appended after the ``dlq.*`` block,
  such as ``lineage``, are not original), minus every ``dlq.*`` header
  (including the ``dlq.replayed_from`` of an earlier replay), plus
  ``dlq.replayed_from = "<dlq topic>/<partition>/<offset>"`` naming the dead
  letter it came from;
* timestamp: the original message timestamp (header ``dlq.timestamp``), so a
  click without ``ts`` keeps its event time; ``--fresh-timestamps`` lets the
  producer stamp the current time instead. Without ``dlq.timestamp`` the
  producer stamps the current time.

Everything is read and checked before anything is produced (so the replay
never feeds on its own output, even when a running job dead-letters the
replayed records again): a missing DLQ or target topic, or a selected record
without ``dlq.topic`` and no ``--to-topic``, stops the command with status 2
and nothing produced.

Filters: ``--reason`` (header ``dlq.reason``), ``--stage`` (``dlq.stage``) and
``--source-topic`` (``dlq.topic``) are repeatable; a record must match one of
the values given for each flag used.

Exit status: 0 every selected record delivered (or a dry run), 1 a delivery
failed or Kafka could not be read, 2 usage error, missing topic, unroutable
record. Kafka connection settings come from the ``KAFKA_*`` environment
variables (:class:`clickstream.settings.KafkaConnection`, SASL included);
they are never printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import os
import sys
from collections import Counter
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import orjson

from clickstream.read_topic import ReadTimeout, Record, TopicNotFound, iter_records

#: Prefix of every header the dead-letter writer adds (and the replay removes).
DLQ_HEADER_PREFIX = "dlq."
#: Header naming the dead letter a replayed record came from.
REPLAYED_FROM = "dlq.replayed_from"
#: The first header of the dead-letter writer's block.
DLQ_ERROR = "dlq.error"
#: Shown when a dead letter lacks a header.
MISSING = "<none>"

#: Producer defaults; KAFKA_* environment properties override them.
PRODUCER_DEFAULTS = {
    # Keeps each partition's order through retries.
    "enable.idempotence": "true",
    "linger.ms": "20",
}
FLUSH_TIMEOUT_S = 60.0

HeaderList = List[Tuple[str, Optional[bytes]]]


class UsageError(ValueError):
    """The command cannot run as asked (exit status 2, nothing produced)."""


# ------------------------------------------------------------ pure logic


def header_text(headers: Optional[Sequence[Tuple[str, Optional[bytes]]]], name: str) -> Optional[str]:
    """The value of header ``name`` as text (the last one if repeated), or None.

    The last one, because the dead-letter writer appends its headers after
    the original ones.
    """
    found: Optional[bytes] = None
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

    reasons: FrozenSet[str] = frozenset()
    stages: FrozenSet[str] = frozenset()
    source_topics: FrozenSet[str] = frozenset()

    def matches(self, headers: Optional[Sequence[Tuple[str, Optional[bytes]]]]) -> bool:
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


def original_headers(headers: Optional[Sequence[Tuple[str, Optional[bytes]]]]) -> HeaderList:
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
    headers: Optional[Sequence[Tuple[str, Optional[bytes]]]],
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
    source_topic: Optional[str]
    #: Where it goes: ``--to-topic`` or the source topic (None: nowhere known).
    target: Optional[str]
    key: Optional[bytes]
    value: Optional[bytes]
    headers: HeaderList
    #: Explicit message timestamp (epoch ms), or None for the producer's clock.
    timestamp_ms: Optional[int]

    @property
    def origin(self) -> str:
        """``<dlq topic>/<partition>/<offset>`` of the dead letter."""
        d = self.dead_letter
        return f"{d.topic}/{d.partition}/{d.offset}"


def _int_or_none(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def replay_item(
    record: Record, to_topic: Optional[str] = None, keep_timestamps: bool = True
) -> ReplayItem:
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
    to_topic: Optional[str] = None
    limit: Optional[int] = None
    read: int = 0
    #: Dead letters matching the filters (before ``limit``).
    matched: int = 0
    items: List[ReplayItem] = dataclasses.field(default_factory=list)

    @property
    def selected(self) -> int:
        return len(self.items)

    @property
    def unroutable(self) -> List[ReplayItem]:
        return [item for item in self.items if item.target is None]

    @property
    def targets(self) -> List[str]:
        return sorted({item.target for item in self.items if item.target is not None})

    def by_source_and_reason(self) -> Counter:
        return Counter((item.source_topic or MISSING, item.reason) for item in self.items)

    def by_target(self) -> Counter:
        return Counter(item.target or MISSING for item in self.items)


def plan_replay(
    records: Iterable[Record],
    dlq_topic: str,
    filters: Filters = Filters(),
    to_topic: Optional[str] = None,
    limit: Optional[int] = None,
    keep_timestamps: bool = True,
) -> Plan:
    """Read every record (so the counts are complete); select the matching ones
    in (partition, offset) order, the first ``limit`` of them if given.

    Memory holds the selected records only (a bounded heap with ``limit``).
    """
    plan = Plan(dlq_topic=dlq_topic, filters=filters, to_topic=to_topic, limit=limit)
    # Max-heap on (partition, offset) of the best `limit` matches so far.
    kept: List[Tuple[int, int, int, Record]] = []
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


def preview(data: Optional[bytes], width: int = 60) -> str:
    """Bytes shown safely on a terminal: UTF-8 text with every non-printable
    character, invalid byte and backslash escaped, cut at ``width`` bytes."""
    if data is None:
        return "<null>"
    if not data:
        return "<empty>"
    head = data[:width].decode("utf-8", "surrogateescape")
    out = []
    for ch in head:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    text = "".join(out)
    if len(data) > width:
        text += f"... (+{len(data) - width} bytes)"
    return text


def format_item(item: ReplayItem, width: int = 60) -> str:
    """``p0@5 reason=missing_user_id from=user_clicks/1/17 -> user_clicks key=... value=...``."""
    d = item.dead_letter
    src = MISSING
    if item.source_topic is not None:
        src = (f"{item.source_topic}/{header_text(d.headers, 'dlq.partition') or '?'}"
               f"/{header_text(d.headers, 'dlq.offset') or '?'}")
    size = "null" if item.value is None else f"{len(item.value)} bytes"
    return (
        f"p{d.partition}@{d.offset} reason={item.reason} from={src} "
        f"-> {item.target or MISSING} key={preview(item.key, 40)} "
        f"value={preview(item.value, width)} ({size})"
    )


@dataclasses.dataclass
class ReplayResult:
    """How the production went."""

    produced: int = 0
    delivered: int = 0
    failures: int = 0
    #: (target topic, reason) -> records delivered.
    delivered_by: Counter = dataclasses.field(default_factory=Counter)
    #: First few failure messages (never any configuration).
    failure_examples: List[str] = dataclasses.field(default_factory=list)

    def fail(self, message: str, count: int = 1) -> None:
        self.failures += count
        if len(self.failure_examples) < 5:
            self.failure_examples.append(message)


def replay(items: Sequence[ReplayItem], producer: Any, flush_timeout_s: float = FLUSH_TIMEOUT_S) -> ReplayResult:
    """Produce every item (in order) with ``producer`` and count the delivery reports.

    ``producer`` is a confluent-kafka ``Producer`` (or anything with its
    ``produce``, ``poll`` and ``flush``).
    """
    result = ReplayResult()

    def reporter(item: ReplayItem) -> Callable:
        def on_delivery(err, _msg) -> None:
            if err is None:
                result.delivered += 1
                result.delivered_by[(item.target, item.reason)] += 1
            else:
                result.fail(f"{item.origin} -> {item.target}: {err}")

        return on_delivery

    for n, item in enumerate(items, start=1):
        if item.target is None:
            result.fail(f"{item.origin}: no dlq.topic header and no --to-topic")
            continue
        kwargs: Dict[str, Any] = {
            "key": item.key, "value": item.value, "headers": item.headers,
            "on_delivery": reporter(item),
        }
        if item.timestamp_ms is not None:
            kwargs["timestamp"] = item.timestamp_ms
        while True:
            try:
                producer.produce(item.target, **kwargs)
                result.produced += 1
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: serve delivery reports
            except Exception as exc:  # KafkaException: message too large, unknown topic...
                result.fail(f"{item.origin} -> {item.target}: {exc}")
                break
        if n % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(flush_timeout_s)
    if remaining:
        result.fail(f"{remaining} record(s) not delivered within {flush_timeout_s:g} s", remaining)
    return result


def _table(counter: Counter, indent: str = "  ") -> List[str]:
    rows = [(tuple(k) if isinstance(k, tuple) else (k,), n) for k, n in counter.items()]
    rows.sort()
    if not rows:
        return [f"{indent}(none)"]
    widths = [max(len(str(key[i])) for key, _ in rows) for i in range(len(rows[0][0]))]
    return [
        indent + "  ".join(str(part).ljust(w) for part, w in zip(key, widths)) + f"  {n}"
        for key, n in rows
    ]


def format_summary(
    plan: Plan, result: Optional[ReplayResult] = None, dry_run: bool = False, show: int = 10
) -> str:
    """The human-readable report."""
    lines = [
        f"dlq topic:  {plan.dlq_topic}",
        f"read:       {plan.read}",
        f"filters:    {plan.filters.describe()}",
    ]
    selected = f"selected:   {plan.selected}"
    if plan.matched != plan.selected:
        selected += f" (of {plan.matched} matching; --limit {plan.limit})"
    lines.append(selected)
    lines.append("selected by source topic and reason:")
    lines += _table(plan.by_source_and_reason())
    lines.append("selected by target topic:")
    lines += _table(plan.by_target())
    if dry_run:
        lines.append(f"dry run: nothing produced; would replay {plan.selected}")
        if plan.items and show > 0:
            lines.append(f"first {min(show, plan.selected)} selected:")
            lines += ["  " + format_item(item) for item in plan.items[:show]]
    elif result is not None:
        lines.append(f"replayed:   {result.delivered}")
        lines.append("replayed by target topic and reason:")
        lines += _table(result.delivered_by)
        lines.append(f"failures:   {result.failures}")
        lines += [f"  failure: {example}" for example in result.failure_examples]
    return "\n".join(lines)


def summary_dict(plan: Plan, result: Optional[ReplayResult] = None, dry_run: bool = False) -> Dict[str, Any]:
    """The report as data (``--json-report``)."""

    def nested(counter: Counter) -> Dict[str, Dict[str, int]]:
        out: Dict[str, Dict[str, int]] = {}
        for (outer, inner), n in sorted(counter.items()):
            out.setdefault(outer, {})[inner] = n
        return out

    data: Dict[str, Any] = {
        "dlq_topic": plan.dlq_topic,
        "dry_run": dry_run,
        "filters": {
            "reasons": sorted(plan.filters.reasons),
            "stages": sorted(plan.filters.stages),
            "source_topics": sorted(plan.filters.source_topics),
        },
        "to_topic": plan.to_topic,
        "limit": plan.limit,
        "read": plan.read,
        "matched": plan.matched,
        "selected": plan.selected,
        "selected_by_source_topic": nested(plan.by_source_and_reason()),
        "selected_by_target_topic": dict(sorted(plan.by_target().items())),
        "records": [
            {"origin": item.origin, "reason": item.reason, "stage": item.stage,
             "source_topic": item.source_topic, "target": item.target}
            for item in plan.items
        ],
    }
    if result is not None:
        data.update(
            replayed=result.delivered,
            replayed_by_target_topic=nested(result.delivered_by),
            failures=result.failures,
            failure_examples=result.failure_examples,
        )
    return data


# ------------------------------------------------------------ Kafka side


def kafka_config(bootstrap_servers: Optional[str], environ: Mapping[str, str]) -> Dict[str, str]:
    """The librdkafka config from ``KAFKA_*`` variables (SASL included).

    Raises :class:`UsageError` without echoing any value.
    """
    from pydantic import ValidationError

    from clickstream.settings import KafkaConnection

    try:
        config = KafkaConnection.from_env(environ).to_librdkafka()
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            loc = e.get("loc") or ("?",)
            var = "KAFKA_BOOTSTRAP_SERVERS" if loc[0] == "bootstrap_servers" else str(loc[0])
            problems.append(f"{var}: {e.get('msg', 'invalid')}")
        raise UsageError("invalid Kafka configuration: " + "; ".join(problems)) from None
    if bootstrap_servers:
        config["bootstrap.servers"] = bootstrap_servers
    return config


def missing_topics(client: Any, topics: Iterable[str], timeout_s: float = 10.0) -> List[str]:
    """Which of ``topics`` the cluster does not have (full metadata: never auto-creates)."""
    metadata = client.list_topics(timeout=timeout_s)
    missing = []
    for topic in topics:
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            missing.append(topic)
    return sorted(missing)


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clickstream-dlq-replay",
        description="Re-produce dead letters (original value, key and headers) to their "
        "source topic or to --to-topic.",
    )
    p.add_argument("--dlq-topic", default=os.environ.get("DLQ_TOPIC") or "dead_letters",
                   help="default: $DLQ_TOPIC or dead_letters")
    p.add_argument("--bootstrap-servers", default=None,
                   help="default: KAFKA_BOOTSTRAP_SERVERS (other KAFKA_* librdkafka "
                   "properties, e.g. SASL, are always read from the environment)")
    p.add_argument("--reason", action="append", default=[], metavar="REASON",
                   help="replay only dead letters with this dlq.reason (repeatable)")
    p.add_argument("--stage", action="append", default=[], metavar="STAGE",
                   help="replay only dead letters with this dlq.stage (repeatable)")
    p.add_argument("--source-topic", action="append", default=[], metavar="TOPIC",
                   help="replay only dead letters whose dlq.topic is TOPIC (repeatable)")
    p.add_argument("--to-topic", default=None, metavar="TOPIC",
                   help="produce to TOPIC instead of each record's source topic")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="replay only the first N selected dead letters")
    p.add_argument("--dry-run", action="store_true",
                   help="produce nothing; print what would be replayed")
    p.add_argument("--show", type=int, default=10, metavar="N",
                   help="with --dry-run: how many selected records to print (default 10)")
    p.add_argument("--fresh-timestamps", action="store_true",
                   help="let the producer stamp the current time instead of the original "
                   "message timestamp (dlq.timestamp)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds allowed to read the DLQ topic to its end (default 30)")
    p.add_argument("--json-report", metavar="PATH", default=None,
                   help="also write the summary as JSON to PATH")
    return p


def _parse_args(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must be >= 0")
    if args.show < 0:
        parser.error("--show must be >= 0")
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    for flag, values in (("--reason", args.reason), ("--stage", args.stage),
                         ("--source-topic", args.source_topic)):
        if any(not v for v in values):
            parser.error(f"{flag} must not be empty")
    if args.to_topic is not None and not args.to_topic:
        parser.error("--to-topic must not be empty")
    if not args.dlq_topic:
        parser.error("--dlq-topic must not be empty")
    if args.to_topic == args.dlq_topic:
        parser.error("--to-topic must not be the dead-letter topic")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: 0 ok, 1 delivery failure or Kafka error, 2 usage / missing topic."""
    parser = build_parser()
    try:
        args = _parse_args(parser, argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    filters = Filters(frozenset(args.reason), frozenset(args.stage), frozenset(args.source_topic))
    out, err = sys.stdout, sys.stderr
    plan: Optional[Plan] = None
    result: Optional[ReplayResult] = None
    try:
        config = kafka_config(args.bootstrap_servers, os.environ)
        plan = plan_replay(
            iter_records(config, args.dlq_topic, args.timeout),
            args.dlq_topic, filters, args.to_topic, args.limit,
            keep_timestamps=not args.fresh_timestamps,
        )
        from confluent_kafka import Producer

        producer = Producer({**PRODUCER_DEFAULTS, **config})
        missing = missing_topics(producer, plan.targets)
        if args.dry_run:
            print(format_summary(plan, dry_run=True, show=args.show), file=out, flush=True)
        if missing:
            raise UsageError(
                "target topic(s) do not exist: " + ", ".join(repr(t) for t in missing)
                + "; create them first (nothing was replayed)"
            )
        check_plan(plan)
        if not args.dry_run:
            result = replay(plan.items, producer)
            print(format_summary(plan, result), file=out, flush=True)
    except (UsageError, TopicNotFound) as exc:
        print(f"error: {exc}", file=err, flush=True)
        return 2
    except ReadTimeout as exc:
        print(f"error: {exc}", file=err, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=err, flush=True)
        return 130
    except Exception as exc:  # KafkaException: unreachable broker, auth failure, bad property
        print(f"error: {exc}", file=err, flush=True)
        return 1
    if args.json_report:
        with open(args.json_report, "wb") as fh:
            fh.write(orjson.dumps(summary_dict(plan, result, args.dry_run), option=orjson.OPT_INDENT_2))
    if result is not None and result.failures:
        print(f"error: {result.failures} record(s) not replayed", file=err, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
