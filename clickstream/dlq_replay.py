"""Replay dead letters: re-produce the original records of a DLQ topic.

``python -m clickstream.dlq_replay [--reason R]... [--stage S]... [--source-topic T]... [--to-topic T] [--limit N] [--dry-run] [--show N]``

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

Filters (repeatable; a record matches one value of each flag used): ``--reason``
(``dlq.reason``), ``--stage`` (``dlq.stage``), ``--source-topic`` (``dlq.topic``).

Exit status: 0 all delivered (or a dry run), 1 a delivery failed or Kafka could not be
read, 2 usage error, missing topic, unroutable record. Kafka settings come from ``KAFKA_*``
(:class:`connectors.kafka_connection.KafkaConnection`, SASL included), never printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from clickstream.dlq_plan import (  # re-exported: the replay's API
    DLQ_ERROR,
    DLQ_HEADER_PREFIX,
    MISSING,
    REPLAYED_FROM,
    Filters,
    HeaderList,
    Plan,
    ReplayItem,
    check_plan,
    format_item,
    header_text,
    original_headers,
    plan_replay,
    replay_headers,
    replay_item,
)
from clickstream.read_topic import ReadTimeout, TopicNotFound, iter_records
from clickstream.tooling import UsageError, kafka_config, preview, table
from connectors.kafka_io import PRODUCER_DEFAULTS, missing_topics, produce_with_backpressure

__all__ = [
    "DLQ_ERROR",
    "DLQ_HEADER_PREFIX",
    "MISSING",
    "REPLAYED_FROM",
    "Filters",
    "HeaderList",
    "Plan",
    "ReplayItem",
    "ReplayResult",
    "UsageError",
    "build_parser",
    "check_plan",
    "format_item",
    "format_summary",
    "header_text",
    "kafka_config",
    "main",
    "original_headers",
    "plan_replay",
    "preview",
    "replay",
    "replay_headers",
    "replay_item",
    "summary_dict",
]

FLUSH_TIMEOUT_S = 60.0


@dataclasses.dataclass
class ReplayResult:
    """How the production went."""

    produced: int = 0
    delivered: int = 0
    failures: int = 0
    #: (target topic, reason) -> records delivered.
    delivered_by: Counter = dataclasses.field(default_factory=Counter)
    #: First few failure messages (never any configuration).
    failure_examples: list[str] = dataclasses.field(default_factory=list)

    def fail(self, message: str, count: int = 1) -> None:
        self.failures += count
        if len(self.failure_examples) < 5:
            self.failure_examples.append(message)


def replay(
    items: Sequence[ReplayItem], producer: Any, flush_timeout_s: float = FLUSH_TIMEOUT_S
) -> ReplayResult:
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
        kwargs: dict[str, Any] = {
            "key": item.key,
            "value": item.value,
            "headers": item.headers,
            "on_delivery": reporter(item),
        }
        if item.timestamp_ms is not None:
            kwargs["timestamp"] = item.timestamp_ms
        try:
            produce_with_backpressure(producer, item.target, **kwargs)
            result.produced += 1
        except Exception as exc:  # KafkaException: message too large, unknown topic...
            result.fail(f"{item.origin} -> {item.target}: {exc}")
        if n % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(flush_timeout_s)
    if remaining:
        result.fail(f"{remaining} record(s) not delivered within {flush_timeout_s:g} s", remaining)
    return result


def _counts(counter: Counter) -> list[str]:
    """One line per key (its parts as columns) and its count, sorted."""
    rows = sorted((tuple(k) if isinstance(k, tuple) else (k,), n) for k, n in counter.items())
    return table([(*key, n) for key, n in rows], indent="  ") or ["  (none)"]


def format_summary(
    plan: Plan, result: ReplayResult | None = None, dry_run: bool = False, show: int = 10
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
    lines += _counts(plan.by_source_and_reason())
    lines.append("selected by target topic:")
    lines += _counts(plan.by_target())
    if dry_run:
        lines.append(f"dry run: nothing produced; would replay {plan.selected}")
        if plan.items and show > 0:
            lines.append(f"first {min(show, plan.selected)} selected:")
            lines += ["  " + format_item(item) for item in plan.items[:show]]
    elif result is not None:
        lines.append(f"replayed:   {result.delivered}")
        lines.append("replayed by target topic and reason:")
        lines += _counts(result.delivered_by)
        lines.append(f"failures:   {result.failures}")
        lines += [f"  failure: {example}" for example in result.failure_examples]
    return "\n".join(lines)


def summary_dict(plan: Plan, result: ReplayResult | None = None, dry_run: bool = False) -> dict[str, Any]:
    """The report as data (``--json-report``)."""

    def nested(counter: Counter) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (outer, inner), n in sorted(counter.items()):
            out.setdefault(outer, {})[inner] = n
        return out

    data: dict[str, Any] = {
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
            {
                "origin": item.origin,
                "reason": item.reason,
                "stage": item.stage,
                "source_topic": item.source_topic,
                "target": item.target,
            }
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clickstream-dlq-replay",
        description="Re-produce dead letters (original value, key and headers) to their "
        "source topic or to --to-topic.",
    )
    p.add_argument(
        "--dlq-topic",
        default=os.environ.get("DLQ_TOPIC") or "dead_letters",
        help="default: $DLQ_TOPIC or dead_letters",
    )
    p.add_argument(
        "--bootstrap-servers",
        default=None,
        help="default: KAFKA_BOOTSTRAP_SERVERS (other KAFKA_* librdkafka "
        "properties, e.g. SASL, are always read from the environment)",
    )
    p.add_argument(
        "--reason",
        action="append",
        default=[],
        metavar="REASON",
        help="replay only dead letters with this dlq.reason (repeatable)",
    )
    p.add_argument(
        "--stage",
        action="append",
        default=[],
        metavar="STAGE",
        help="replay only dead letters with this dlq.stage (repeatable)",
    )
    p.add_argument(
        "--source-topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="replay only dead letters whose dlq.topic is TOPIC (repeatable)",
    )
    p.add_argument(
        "--to-topic",
        default=None,
        metavar="TOPIC",
        help="produce to TOPIC instead of each record's source topic",
    )
    p.add_argument(
        "--limit", type=int, default=None, metavar="N", help="replay only the first N selected dead letters"
    )
    p.add_argument("--dry-run", action="store_true", help="produce nothing; print what would be replayed")
    p.add_argument(
        "--show",
        type=int,
        default=10,
        metavar="N",
        help="with --dry-run: how many selected records to print (default 10)",
    )
    p.add_argument(
        "--fresh-timestamps",
        action="store_true",
        help="let the producer stamp the current time instead of the original "
        "message timestamp (dlq.timestamp)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds allowed to read the DLQ topic to its end (default 30)",
    )
    p.add_argument(
        "--json-report", metavar="PATH", default=None, help="also write the summary as JSON to PATH"
    )
    return p


def _parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must be >= 0")
    if args.show < 0:
        parser.error("--show must be >= 0")
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    for flag, values in (
        ("--reason", args.reason),
        ("--stage", args.stage),
        ("--source-topic", args.source_topic),
    ):
        if any(not v for v in values):
            parser.error(f"{flag} must not be empty")
    if args.to_topic is not None and not args.to_topic:
        parser.error("--to-topic must not be empty")
    if not args.dlq_topic:
        parser.error("--dlq-topic must not be empty")
    if args.to_topic == args.dlq_topic:
        parser.error("--to-topic must not be the dead-letter topic")
    return args


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 ok, 1 delivery failure or Kafka error, 2 usage / missing topic."""
    parser = build_parser()
    try:
        args = _parse_args(parser, argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    filters = Filters(frozenset(args.reason), frozenset(args.stage), frozenset(args.source_topic))
    out, err = sys.stdout, sys.stderr
    plan: Plan | None = None
    result: ReplayResult | None = None
    try:
        config = kafka_config(args.bootstrap_servers, os.environ)
        plan = plan_replay(
            iter_records(config, args.dlq_topic, args.timeout),
            args.dlq_topic,
            filters,
            args.to_topic,
            args.limit,
            keep_timestamps=not args.fresh_timestamps,
        )
        from confluent_kafka import Producer

        producer = Producer({**PRODUCER_DEFAULTS, **config})
        missing = missing_topics(config, plan.targets)
        if args.dry_run:
            print(format_summary(plan, dry_run=True, show=args.show), file=out, flush=True)
        if missing:
            raise UsageError(
                "target topic(s) do not exist: "
                + ", ".join(repr(t) for t in missing)
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
