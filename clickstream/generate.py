"""Produce seeded, reproducible synthetic clickstream data to Kafka.

``python -m clickstream.generate [--users N] [--clicks N] ... [--rate N]``

The records come from :mod:`clickstream.synthetic` (pure: same seed and
options, byte-identical records; see there what the data exercises). This
module sends them with a confluent-kafka ``Producer``
(:func:`connectors.kafka_io.produce_all`: back-pressure, delivery reports
counted), after checking that both topics exist (never creating them). Any
failed delivery makes the exit status non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from clickstream.generate_options import add_cli_options, options_from_args
from clickstream.synthetic import (  # re-exported: the generator's API
    BAD_KINDS,
    CLICKS,
    DEFAULT_START,
    PROFILES,
    GeneratedRecord,
    GenerateOptions,
    generate_records,
    parse_start_ms,
    split_by_topic,
)
from clickstream.tooling import UsageError, kafka_config
from connectors.kafka_io import PRODUCER_DEFAULTS, TopicNotFound, produce_all, require_topics

__all__ = [
    "BAD_KINDS",
    "CLICKS",
    "DEFAULT_START",
    "PROFILES",
    "GenerateOptions",
    "GenerateReport",
    "GeneratedRecord",
    "build_parser",
    "generate_records",
    "main",
    "options_from_args",
    "parse_start_ms",
    "produce",
    "split_by_topic",
    "summarize",
]


@dataclasses.dataclass
class GenerateReport:
    """What a run produced and how delivery went."""

    profiles_topic: str = ""
    clicks_topic: str = ""
    profiles_produced: int = 0
    #: Good clicks, including unknown-user clicks.
    clicks_produced: int = 0
    unknown_user_clicks: int = 0
    #: topic role -> bad kind -> count.
    bad_records: dict[str, dict[str, int]] = dataclasses.field(
        default_factory=lambda: {PROFILES: {}, CLICKS: {}}
    )
    records_produced: int = 0
    delivered: int = 0
    delivery_failures: int = 0
    #: First few delivery errors, for the message.
    failure_examples: list[str] = dataclasses.field(default_factory=list)
    elapsed_seconds: float = 0.0
    #: Records (all kinds) per second of elapsed time.
    records_per_second: float = 0.0

    @property
    def bad_total(self) -> int:
        return sum(sum(kinds.values()) for kinds in self.bad_records.values())

    def count(self, record: GeneratedRecord) -> None:
        self.records_produced += 1
        if record.kind == "profile":
            self.profiles_produced += 1
        elif record.kind in ("click", "unknown_click"):
            self.clicks_produced += 1
            if record.kind == "unknown_click":
                self.unknown_user_clicks += 1
        else:
            kinds = self.bad_records.setdefault(record.topic_role, {})
            kinds[record.kind] = kinds.get(record.kind, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["bad_total"] = self.bad_total
        return data

    def format(self) -> str:
        lines = [
            f"profiles produced:    {self.profiles_produced} -> {self.profiles_topic}",
            f"clicks produced:      {self.clicks_produced} -> {self.clicks_topic}"
            f" ({self.unknown_user_clicks} of unknown users)",
            f"bad records produced: {self.bad_total}",
        ]
        for role, kinds in self.bad_records.items():
            for kind, n in sorted(kinds.items()):
                lines.append(f"  {role:<8} {kind:<24} {n}")
        lines += [
            f"delivered:            {self.delivered} of {self.records_produced}",
            f"delivery failures:    {self.delivery_failures}",
            f"elapsed:              {self.elapsed_seconds:.2f} s ({self.records_per_second:,.0f} records/s)",
        ]
        lines += [f"  failure: {example}" for example in self.failure_examples]
        return "\n".join(lines)


def summarize(records: Iterable[GeneratedRecord]) -> GenerateReport:
    """The counts part of a report for records that were only generated."""
    report = GenerateReport()
    for record in records:
        report.count(record)
    return report


def produce(
    options: GenerateOptions,
    config: dict[str, Any],
    profiles_topic: str,
    clicks_topic: str,
    *,
    flush_timeout_s: float = 60.0,
    check_topics: bool = True,
) -> GenerateReport:
    """Produce :func:`generate_records` to the two topics; count delivery reports.

    ``config`` is a librdkafka config dict (bootstrap.servers, SASL, ...).
    Records not delivered within ``flush_timeout_s`` count as failures.
    Raises :class:`~connectors.kafka_io.TopicNotFound` for a missing topic.
    """
    from confluent_kafka import Producer

    if check_topics:
        require_topics(config, [profiles_topic, clicks_topic])
    producer = Producer({**PRODUCER_DEFAULTS, **config})
    report = GenerateReport(profiles_topic=profiles_topic, clicks_topic=clicks_topic)
    topics = {PROFILES: profiles_topic, CLICKS: clicks_topic}

    def messages() -> Iterator[tuple[str, dict[str, Any]]]:
        for record in generate_records(options):
            kwargs: dict[str, Any] = {"key": record.key, "value": record.value}
            if record.timestamp_ms is not None:
                kwargs["timestamp"] = record.timestamp_ms
            yield topics[record.topic_role], kwargs
            report.count(record)

    started = time.monotonic()
    deliveries = produce_all(producer, messages(), flush_timeout_s=flush_timeout_s, check=False)
    report.delivered = deliveries.delivered
    report.delivery_failures = deliveries.failed
    report.failure_examples = deliveries.examples
    report.elapsed_seconds = time.monotonic() - started
    report.records_per_second = (
        report.records_produced / report.elapsed_seconds if report.elapsed_seconds else 0.0
    )
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clickstream-generate",
        description="Produce seeded, reproducible synthetic user profiles and clicks "
        "(with optional bad records) to Kafka.",
    )
    p.add_argument(
        "--bootstrap-servers",
        default=None,
        help="default: KAFKA_BOOTSTRAP_SERVERS (other KAFKA_* librdkafka "
        "properties, e.g. SASL, are always read from the environment)",
    )
    p.add_argument(
        "--profiles-topic",
        default=os.environ.get("PROFILES_TOPIC", "user_profiles"),
        help="default: $PROFILES_TOPIC or user_profiles",
    )
    p.add_argument(
        "--clicks-topic",
        default=os.environ.get("CLICKS_TOPIC", "user_clicks"),
        help="default: $CLICKS_TOPIC or user_clicks",
    )
    add_cli_options(p)
    p.add_argument(
        "--json-report", metavar="PATH", default=None, help="also write the report as JSON to PATH"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 all delivered, 1 delivery failures, 2 bad usage/setup."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        config = kafka_config(args.bootstrap_servers, os.environ)
    except UsageError as exc:  # a bad KAFKA_* variable (its value never shown)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        report = produce(options, config, args.profiles_topic, args.clicks_topic)
    except TopicNotFound as exc:
        print(f"error: {exc}; create it first", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # KafkaException: broker unreachable, bad config
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.format(), flush=True)
    if args.json_report:
        with open(args.json_report, "wb") as fh:
            fh.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
    return 1 if report.delivery_failures else 0


if __name__ == "__main__":
    sys.exit(main())
