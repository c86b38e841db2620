"""Seeded, reproducible synthetic clickstream data: user profiles and clicks.

Two parts:

* :func:`generate_records` is pure: from :class:`GenerateOptions` it yields
  every record (good and deliberately bad) in production order, without
  Kafka. Same seed and options give byte-identical records, so tests and
  benchmarks can rebuild exactly what was produced.
* :func:`produce` / :func:`main` (``python -m clickstream.generate``) send
  them with a confluent-kafka ``Producer`` and count delivery reports; any
  failed delivery makes the exit status non-zero.

What the data exercises downstream:

* profiles: several versions per user over the event-time span, ``updated_at``
  as ISO-8601 with offset *or* epoch ms, produced in ``updated_at`` order (the
  key partitioner keeps a user on one partition, so each user's versions stay
  in order);
* clicks: ``ts`` as epoch ms, ISO-8601 string, or missing (then the Kafka
  message timestamp is set to the event time); optional out-of-order jitter;
  clicks of users that have no profile (``unknown_click``); optional integer
  user ids in clicks against string ids in profiles (``--numeric-user-ids``);
* bad records of every kind in both topics (``bad:<reason>`` kinds, see
  :data:`BAD_KINDS`).

Records that carry their own event time are produced without an explicit
message timestamp (the producer stamps wall-clock time), so a consumer that
reads the message timestamp instead of the payload's time is caught.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import os
import random
import sys
import time
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

import orjson

PROFILES = "profiles"
CLICKS = "clicks"

DEFAULT_START = "2026-01-01T00:00:00+00:00"

#: Every kind of bad record, mixed round-robin into both topics.
BAD_KINDS: Tuple[str, ...] = (
    "bad:invalid_json",
    "bad:non_utf8",
    "bad:not_object_list",
    "bad:not_object_number",
    "bad:not_object_string",
    "bad:missing_user_id",
    "bad:user_id_float",
    "bad:user_id_bool",
    "bad:user_id_object",
    "bad:user_id_null",
    "bad:time_unparseable",
    "bad:time_float",
    "bad:time_naive",
    "bad:tombstone",
)

TIERS = ("free", "pro", "enterprise")
TIER_WEIGHTS = (70, 25, 5)
COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "AU", "NL", "ES", "SE")
FIRST_NAMES = ("Ada", "Alan", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis",
               "Frances", "Edsger", "Radia", "Donald", "Sophie", "Tim", "Hedy", "Guido")
LAST_NAMES = ("Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Thompson",
              "Liskov", "Ritchie", "Allen", "Dijkstra", "Perlman", "Knuth", "Wilson")
ACTIONS = ("view", "click", "add_to_cart")
ACTION_WEIGHTS = (60, 30, 10)
PAGES = ("/", "/cart", "/checkout", "/search", "/account")


class GeneratedRecord(NamedTuple):
    """One record to produce, in production order."""

    #: ``"profiles"`` or ``"clicks"``: which topic it goes to.
    topic_role: str
    key: Optional[bytes]
    value: Optional[bytes]
    #: Explicit Kafka message timestamp (epoch ms), or None for producer time.
    timestamp_ms: Optional[int]
    #: ``"profile"``, ``"click"``, ``"unknown_click"`` or ``"bad:<reason>"``.
    kind: str


@dataclasses.dataclass(frozen=True)
class GenerateOptions:
    """What to generate. Defaults give a small, fixed, reproducible data set."""

    users: int = 100
    clicks: int = 1000
    versions_per_user: int = 3
    seed: int = 42
    #: Event time of the first event (ISO-8601 with offset). Ignored when rate > 0.
    start: str = DEFAULT_START
    #: Event-time span of the data. When rate > 0 it is clicks / rate instead.
    span_seconds: float = 3600.0
    #: Clicks per second (0 = as fast as possible, event times from ``start``).
    #: At a rate, event time is the scheduled send time (i.e. now) and
    #: :func:`generate_records` sleeps to keep the pace.
    rate: float = 0.0
    #: Extra bad records per topic, as a fraction of that topic's good records.
    bad_fraction: float = 0.0
    #: Fraction of clicks whose user has no profile at all.
    unknown_fraction: float = 0.0
    #: Max random jitter subtracted from click event times (0 = in order).
    out_of_order_ms: int = 0
    #: True: every profile before any click. False: merged by event time.
    profiles_first: bool = True
    #: Clicks carry integer user ids (42) and profiles the string "42".
    numeric_user_ids: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.users < 1:
            problems.append("users must be >= 1")
        if self.clicks < 0:
            problems.append("clicks must be >= 0")
        if self.versions_per_user < 1:
            problems.append("versions_per_user must be >= 1")
        if self.span_seconds <= 0:
            problems.append("span_seconds must be > 0")
        if self.rate < 0:
            problems.append("rate must be >= 0")
        if self.out_of_order_ms < 0:
            problems.append("out_of_order_ms must be >= 0")
        for name in ("bad_fraction", "unknown_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be between 0 and 1")
        try:
            parse_start_ms(self.start)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def profile_count(self) -> int:
        return self.users * self.versions_per_user

    @property
    def unknown_click_count(self) -> int:
        return round(self.clicks * self.unknown_fraction)

    @property
    def bad_profile_count(self) -> int:
        return round(self.profile_count * self.bad_fraction)

    @property
    def bad_click_count(self) -> int:
        return round(self.clicks * self.bad_fraction)


def parse_start_ms(text: str) -> int:
    """ISO-8601 with an explicit UTC offset -> epoch ms (naive times are refused)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"start {text!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"start {text!r} has no UTC offset")
    return int(parsed.timestamp() * 1000)


def iso_ms(ms: int) -> str:
    """Epoch ms -> ``2026-01-01T00:00:00.000+00:00``."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def _profile_id(n: int, options: GenerateOptions, width: int) -> str:
    return str(n) if options.numeric_user_ids else f"u{n:0{width}d}"


def _click_id(n: int, options: GenerateOptions, width: int):
    return n if options.numeric_user_ids else f"u{n:0{width}d}"


def _bad_record(
    kind: str, rng: random.Random, role: str, user: str, unknown_user: str, event_ms: int
) -> Tuple[Optional[bytes], Optional[bytes]]:
    """(key, value) of one bad record of ``kind`` for the topic ``role``."""
    time_field = "updated_at" if role == PROFILES else "ts"
    key = user.encode()

    def good_body(**changes: Any) -> Dict[str, Any]:
        body: Dict[str, Any] = {"user_id": user, time_field: event_ms}
        if role == PROFILES:
            body.update(name="Bad Record", tier="free", country="US", version=1)
        else:
            body.update(page="/", action="view")
        body.update(changes)
        return body

    if kind == "bad:invalid_json":
        return key, orjson.dumps(good_body())[:-7]  # truncated object
    if kind == "bad:non_utf8":
        return key, b'{"user_id": "\xff\xfe' + rng.randbytes(6) + b'"}'
    if kind == "bad:not_object_list":
        return key, orjson.dumps([user, event_ms])
    if kind == "bad:not_object_number":
        return key, orjson.dumps(rng.randrange(1_000_000))
    if kind == "bad:not_object_string":
        return key, orjson.dumps(f"user {user} did something")
    if kind == "bad:missing_user_id":
        body = good_body()
        del body["user_id"]
        return None, orjson.dumps(body)
    if kind == "bad:user_id_float":
        return key, orjson.dumps(good_body(user_id=rng.randrange(1, 1000) + 0.5))
    if kind == "bad:user_id_bool":
        return key, orjson.dumps(good_body(user_id=True))
    if kind == "bad:user_id_object":
        return key, orjson.dumps(good_body(user_id={"id": user}))
    if kind == "bad:user_id_null":
        return key, orjson.dumps(good_body(user_id=None))
    if kind == "bad:time_unparseable":
        return key, orjson.dumps(good_body(**{time_field: "yesterday"}))
    if kind == "bad:time_float":
        return key, orjson.dumps(good_body(**{time_field: 1.5}))
    if kind == "bad:time_naive":
        naive = iso_ms(event_ms)[:19]  # "2026-01-01T00:00:00", no offset
        return key, orjson.dumps(good_body(**{time_field: naive}))
    if kind == "bad:tombstone":
        # Keyed by a user that never had a profile, so a consumer treating
        # tombstones as deletes cannot change any real user's state.
        return unknown_user.encode(), None
    raise ValueError(f"unknown bad kind {kind!r}")


class _Plan:
    """Where the bad records go in one topic's stream, and of which kind."""

    def __init__(self, rng: random.Random, good: int, bad: int):
        total = good + bad
        self.positions = set(rng.sample(range(total), bad)) if bad else set()
        # Round-robin over every kind (in a seeded order), so any topic with
        # at least len(BAD_KINDS) bad records has every kind.
        order = list(BAD_KINDS)
        rng.shuffle(order)
        kinds = [order[i % len(order)] for i in range(bad)]
        rng.shuffle(kinds)
        self.kinds = kinds
        self.total = total


def _profile_stream(options: GenerateOptions, start_ms: int, span_ms: int, width: int):
    """(sort_ms, record) for every profile and bad profile, in production order."""
    rng = random.Random(f"{options.seed}:profiles")
    entries: List[Tuple[int, int, GeneratedRecord]] = []
    versions = options.versions_per_user
    for n in range(1, options.users + 1):
        user = _profile_id(n, options, width)
        later = sorted(rng.sample(range(1, span_ms + 1), min(versions - 1, span_ms)))
        # Version 1 at the start, so every known user's clicks find a profile.
        times = [start_ms] + [start_ms + offset for offset in later]
        tier = rng.choices(TIERS, TIER_WEIGHTS)[0]
        country = rng.choice(COUNTRIES)
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        for version, ms in enumerate(times, start=1):
            if version > 1 and rng.random() < 0.5:
                tier = rng.choices(TIERS, TIER_WEIGHTS)[0]
            if version > 1 and rng.random() < 0.2:
                country = rng.choice(COUNTRIES)
            updated_at: Any = ms if rng.random() < 0.5 else iso_ms(ms)
            value = orjson.dumps({
                "user_id": user, "updated_at": updated_at, "name": name,
                "tier": tier, "country": country, "version": version,
            })
            record = GeneratedRecord(PROFILES, user.encode(), value, None, "profile")
            entries.append((ms, n, record))
    entries.sort(key=lambda e: (e[0], e[1]))  # stable per user: versions in order

    plan = _Plan(rng, len(entries), options.bad_profile_count)
    good = iter(entries)
    bad_index = 0
    last_ms = start_ms
    for slot in range(plan.total):
        if slot in plan.positions:
            kind = plan.kinds[bad_index]
            bad_index += 1
            user = _profile_id(rng.randrange(1, options.users + 1), options, width)
            unknown = _profile_id(options.users + 1 + rng.randrange(options.users), options, width)
            key, value = _bad_record(kind, rng, PROFILES, user, unknown, last_ms)
            yield last_ms, GeneratedRecord(PROFILES, key, value, None, kind)
        else:
            last_ms, _, record = next(good)
            yield last_ms, record


def _click_stream(options: GenerateOptions, start_ms: int, span_ms: int, width: int):
    """(sort_ms, record) for every click and bad click, in production order."""
    rng = random.Random(f"{options.seed}:clicks")
    n_clicks = options.clicks
    unknown_at = set(rng.sample(range(n_clicks), options.unknown_click_count))
    plan = _Plan(rng, n_clicks, options.bad_click_count)
    jitter = options.out_of_order_ms
    click_index = 0
    bad_index = 0
    for slot in range(plan.total):
        base_ms = start_ms + (min(click_index, max(n_clicks - 1, 0)) * span_ms) // max(n_clicks, 1)
        known = rng.randrange(1, options.users + 1)
        unknown_n = options.users + 1 + rng.randrange(options.users)
        if slot in plan.positions:
            kind = plan.kinds[bad_index]
            bad_index += 1
            user = str(_click_id(known, options, width))
            unknown = str(_click_id(unknown_n, options, width))
            key, value = _bad_record(kind, rng, CLICKS, user, unknown, base_ms)
            yield base_ms, GeneratedRecord(CLICKS, key, value, None, kind)
            continue
        is_unknown = click_index in unknown_at
        click_index += 1
        user_id = _click_id(unknown_n if is_unknown else known, options, width)
        event_ms = base_ms
        if jitter:
            event_ms = max(start_ms, base_ms - rng.randint(0, jitter))
        page = (f"/products/{rng.randint(1, 500)}" if rng.random() < 0.75
                else rng.choice(PAGES))
        body: Dict[str, Any] = {"user_id": user_id}
        timestamp_ms = None
        fmt = rng.random()
        if fmt < 0.7:
            body["ts"] = event_ms
        elif fmt < 0.9:
            body["ts"] = iso_ms(event_ms)
        else:
            timestamp_ms = event_ms  # no "ts": the message timestamp is the event time
        body["page"] = page
        body["action"] = rng.choices(ACTIONS, ACTION_WEIGHTS)[0]
        body["session_hint"] = f"s{rng.getrandbits(32):08x}"
        record = GeneratedRecord(
            CLICKS, str(user_id).encode(), orjson.dumps(body), timestamp_ms,
            "unknown_click" if is_unknown else "click",
        )
        yield base_ms, record


def generate_records(
    options: GenerateOptions, *, now_ms: Optional[int] = None
) -> Iterator[GeneratedRecord]:
    """Every record to produce, in production order, lazily.

    Pure unless ``options.rate > 0``: then event times start at the wall clock
    (or ``now_ms``) and the iterator sleeps so that clicks come out at the rate.
    """
    width = max(5, len(str(2 * options.users)))
    if options.rate > 0:
        start_ms = int(time.time() * 1000) if now_ms is None else now_ms
        span_ms = max(1, int(options.clicks / options.rate * 1000))
    else:
        start_ms = parse_start_ms(options.start)
        span_ms = max(1, int(options.span_seconds * 1000))

    profiles = _profile_stream(options, start_ms, span_ms, width)
    clicks = _click_stream(options, start_ms, span_ms, width)
    if options.profiles_first:
        ordered: Iterable[Tuple[int, int, GeneratedRecord]] = (
            (ms, 0, r) for ms, r in _chain(profiles, clicks)
        )
    else:
        # Merge by event time; profiles before clicks at equal times.
        ordered = heapq.merge(
            ((ms, 0, r) for ms, r in profiles), ((ms, 1, r) for ms, r in clicks),
            key=lambda e: (e[0], e[1]),
        )

    if options.rate <= 0:
        for _, _, record in ordered:
            yield record
        return
    wall_start = time.monotonic()
    for ms, _, record in ordered:
        if record.topic_role == CLICKS or not options.profiles_first:
            delay = wall_start + (ms - start_ms) / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield record


def _chain(*streams):
    for stream in streams:
        yield from stream


def split_by_topic(
    records: Iterable[GeneratedRecord],
) -> Tuple[List[GeneratedRecord], List[GeneratedRecord]]:
    """(profiles, clicks): the records of each topic, in production order."""
    profiles: List[GeneratedRecord] = []
    clicks: List[GeneratedRecord] = []
    for record in records:
        (profiles if record.topic_role == PROFILES else clicks).append(record)
    return profiles, clicks


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
    bad_records: Dict[str, Dict[str, int]] = dataclasses.field(
        default_factory=lambda: {PROFILES: {}, CLICKS: {}}
    )
    records_produced: int = 0
    delivered: int = 0
    delivery_failures: int = 0
    #: First few delivery errors, for the message.
    failure_examples: List[str] = dataclasses.field(default_factory=list)
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

    def to_dict(self) -> Dict[str, Any]:
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
            f"elapsed:              {self.elapsed_seconds:.2f} s"
            f" ({self.records_per_second:,.0f} records/s)",
        ]
        lines += [f"  failure: {example}" for example in self.failure_examples]
        return "\n".join(lines)


def summarize(records: Iterable[GeneratedRecord]) -> GenerateReport:
    """The counts part of a report for records that were only generated."""
    report = GenerateReport()
    for record in records:
        report.count(record)
    return report


class TopicMissing(RuntimeError):
    """A topic to produce to does not exist (the broker might auto-create it wrongly)."""


#: Producer defaults; KAFKA_* environment properties override them.
PRODUCER_DEFAULTS = {
    # Keeps each partition's order through retries (profiles must stay in order).
    "enable.idempotence": "true",
    "linger.ms": "20",
    "batch.num.messages": "10000",
    "queue.buffering.max.messages": "500000",
}


def produce(
    options: GenerateOptions,
    config: Dict[str, Any],
    profiles_topic: str,
    clicks_topic: str,
    *,
    flush_timeout_s: float = 60.0,
    check_topics: bool = True,
) -> GenerateReport:
    """Produce :func:`generate_records` to the two topics; count delivery reports.

    ``config`` is a librdkafka config dict (bootstrap.servers, SASL, ...).
    Records not delivered within ``flush_timeout_s`` count as failures.
    """
    from confluent_kafka import Producer

    producer = Producer({**PRODUCER_DEFAULTS, **config})
    report = GenerateReport(profiles_topic=profiles_topic, clicks_topic=clicks_topic)
    if check_topics:
        metadata = producer.list_topics(timeout=10)
        for topic in (profiles_topic, clicks_topic):
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                raise TopicMissing(f"topic {topic!r} does not exist; create it first")

    def on_delivery(err, _msg) -> None:
        if err is None:
            report.delivered += 1
        else:
            report.delivery_failures += 1
            if len(report.failure_examples) < 5:
                report.failure_examples.append(str(err))

    topics = {PROFILES: profiles_topic, CLICKS: clicks_topic}
    started = time.monotonic()
    for record in generate_records(options):
        kwargs: Dict[str, Any] = {"key": record.key, "value": record.value,
                                  "on_delivery": on_delivery}
        if record.timestamp_ms is not None:
            kwargs["timestamp"] = record.timestamp_ms
        while True:
            try:
                producer.produce(topics[record.topic_role], **kwargs)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: serve delivery reports
        report.count(record)
        if report.records_produced % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(flush_timeout_s)
    if remaining:
        report.delivery_failures += remaining
        report.failure_examples.append(
            f"{remaining} records not delivered within {flush_timeout_s:g} s"
        )
    report.elapsed_seconds = time.monotonic() - started
    report.records_per_second = (
        report.records_produced / report.elapsed_seconds if report.elapsed_seconds else 0.0
    )
    return report


def _kafka_config(bootstrap_servers: Optional[str]) -> Dict[str, Any]:
    from clickstream.settings import KafkaConnection

    config = KafkaConnection.from_env(os.environ).to_librdkafka()
    if bootstrap_servers:
        config["bootstrap.servers"] = bootstrap_servers
    return config


def build_parser() -> argparse.ArgumentParser:
    defaults = GenerateOptions()
    p = argparse.ArgumentParser(
        prog="clickstream-generate",
        description="Produce seeded, reproducible synthetic user profiles and clicks "
        "(with optional bad records) to Kafka.",
    )
    p.add_argument("--bootstrap-servers", default=None,
                   help="default: KAFKA_BOOTSTRAP_SERVERS (other KAFKA_* librdkafka "
                   "properties, e.g. SASL, are always read from the environment)")
    p.add_argument("--profiles-topic", default=os.environ.get("PROFILES_TOPIC", "user_profiles"),
                   help="default: $PROFILES_TOPIC or user_profiles")
    p.add_argument("--clicks-topic", default=os.environ.get("CLICKS_TOPIC", "user_clicks"),
                   help="default: $CLICKS_TOPIC or user_clicks")
    p.add_argument("--users", type=int, default=defaults.users)
    p.add_argument("--clicks", type=int, default=defaults.clicks)
    p.add_argument("--versions-per-user", type=int, default=defaults.versions_per_user)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--start", default=defaults.start,
                   help="event time of the first event, ISO-8601 with offset "
                   f"(default {defaults.start}; ignored with --rate)")
    p.add_argument("--span-seconds", type=float, default=defaults.span_seconds,
                   help="event-time span of the data (with --rate: clicks / rate)")
    p.add_argument("--rate", type=float, default=defaults.rate,
                   help="clicks per second, event time = now (0 = as fast as possible)")
    p.add_argument("--bad-fraction", type=float, default=defaults.bad_fraction,
                   help="extra bad records per topic, as a fraction of its good records")
    p.add_argument("--unknown-fraction", type=float, default=defaults.unknown_fraction,
                   help="fraction of clicks whose user has no profile")
    p.add_argument("--out-of-order-ms", type=int, default=defaults.out_of_order_ms,
                   help="max random jitter subtracted from click event times")
    order = p.add_mutually_exclusive_group()
    order.add_argument("--profiles-first", dest="profiles_first", action="store_true",
                       default=True, help="produce all profiles before clicks (default)")
    order.add_argument("--interleave", dest="profiles_first", action="store_false",
                       help="merge profiles and clicks by event time")
    p.add_argument("--numeric-user-ids", action="store_true",
                   help="integer user ids in clicks (42), strings in profiles (\"42\")")
    p.add_argument("--json-report", metavar="PATH", default=None,
                   help="also write the report as JSON to PATH")
    return p


def options_from_args(args: argparse.Namespace) -> GenerateOptions:
    return GenerateOptions(
        users=args.users, clicks=args.clicks, versions_per_user=args.versions_per_user,
        seed=args.seed, start=args.start, span_seconds=args.span_seconds, rate=args.rate,
        bad_fraction=args.bad_fraction, unknown_fraction=args.unknown_fraction,
        out_of_order_ms=args.out_of_order_ms, profiles_first=args.profiles_first,
        numeric_user_ids=args.numeric_user_ids,
    )


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: 0 all delivered, 1 delivery failures, 2 bad usage/setup."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        config = _kafka_config(args.bootstrap_servers)
    except Exception as exc:  # pydantic ValidationError: bad KAFKA_* variable
        print(f"error: invalid Kafka configuration: {exc}", file=sys.stderr)
        return 2
    try:
        report = produce(options, config, args.profiles_topic, args.clicks_topic)
    except TopicMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
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
