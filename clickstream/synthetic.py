"""Seeded, reproducible synthetic clickstream data: user profiles and clicks.

:func:`generate_records` is pure: from :class:`GenerateOptions` it yields
every record (good and deliberately bad) in production order, without Kafka.
Same seed and options give byte-identical records, so tests and benchmarks
can rebuild exactly what was produced. :mod:`clickstream.generate` produces
them to Kafka.

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

import heapq
import itertools
import random
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import orjson

from clickstream.generate_options import DEFAULT_START, GenerateOptions, parse_start_ms
from operators.event_parsing import format_event_time

__all__ = [
    "BAD_KINDS",
    "CLICKS",
    "DEFAULT_START",
    "PROFILES",
    "GenerateOptions",
    "GeneratedRecord",
    "generate_records",
    "parse_start_ms",
    "split_by_topic",
]

PROFILES = "profiles"
CLICKS = "clicks"

#: Every kind of bad record, mixed round-robin into both topics.
BAD_KINDS: tuple[str, ...] = (
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
FIRST_NAMES = (
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Edsger",
    "Radia",
    "Donald",
    "Sophie",
    "Tim",
    "Hedy",
    "Guido",
)
LAST_NAMES = (
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Knuth",
    "Wilson",
)
ACTIONS = ("view", "click", "add_to_cart")
ACTION_WEIGHTS = (60, 30, 10)
PAGES = ("/", "/cart", "/checkout", "/search", "/account")


class GeneratedRecord(NamedTuple):
    """One record to produce, in production order."""

    #: ``"profiles"`` or ``"clicks"``: which topic it goes to.
    topic_role: str
    key: bytes | None
    value: bytes | None
    #: Explicit Kafka message timestamp (epoch ms), or None for producer time.
    timestamp_ms: int | None
    #: ``"profile"``, ``"click"``, ``"unknown_click"`` or ``"bad:<reason>"``.
    kind: str


def _profile_id(n: int, options: GenerateOptions, width: int) -> str:
    return str(n) if options.numeric_user_ids else f"u{n:0{width}d}"


def _click_id(n: int, options: GenerateOptions, width: int):
    return n if options.numeric_user_ids else f"u{n:0{width}d}"


def _bad_record(
    kind: str, rng: random.Random, role: str, user: str, unknown_user: str, event_ms: int
) -> tuple[bytes | None, bytes | None]:
    """(key, value) of one bad record of ``kind`` for the topic ``role``."""
    time_field = "updated_at" if role == PROFILES else "ts"
    key = user.encode()

    def good_body(**changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"user_id": user, time_field: event_ms}
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
        naive = format_event_time(event_ms)[:19]  # "2026-01-01T00:00:00", no offset
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
    entries: list[tuple[int, int, GeneratedRecord]] = []
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
            updated_at: Any = ms if rng.random() < 0.5 else format_event_time(ms)
            value = orjson.dumps(
                {
                    "user_id": user,
                    "updated_at": updated_at,
                    "name": name,
                    "tier": tier,
                    "country": country,
                    "version": version,
                }
            )
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
            bad_key, bad_value = _bad_record(kind, rng, PROFILES, user, unknown, last_ms)
            yield last_ms, GeneratedRecord(PROFILES, bad_key, bad_value, None, kind)
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
        page = f"/products/{rng.randint(1, 500)}" if rng.random() < 0.75 else rng.choice(PAGES)
        body: dict[str, Any] = {"user_id": user_id}
        timestamp_ms = None
        fmt = rng.random()
        if fmt < 0.7:
            body["ts"] = event_ms
        elif fmt < 0.9:
            body["ts"] = format_event_time(event_ms)
        else:
            timestamp_ms = event_ms  # no "ts": the message timestamp is the event time
        body["page"] = page
        body["action"] = rng.choices(ACTIONS, ACTION_WEIGHTS)[0]
        body["session_hint"] = f"s{rng.getrandbits(32):08x}"
        record = GeneratedRecord(
            CLICKS,
            str(user_id).encode(),
            orjson.dumps(body),
            timestamp_ms,
            "unknown_click" if is_unknown else "click",
        )
        yield base_ms, record


def generate_records(options: GenerateOptions, *, now_ms: int | None = None) -> Iterator[GeneratedRecord]:
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
        ordered: Iterable[tuple[int, int, GeneratedRecord]] = (
            (ms, 0, r) for ms, r in itertools.chain(profiles, clicks)
        )
    else:
        # Merge by event time; profiles before clicks at equal times.
        ordered = heapq.merge(
            ((ms, 0, r) for ms, r in profiles),
            ((ms, 1, r) for ms, r in clicks),
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


def split_by_topic(
    records: Iterable[GeneratedRecord],
) -> tuple[list[GeneratedRecord], list[GeneratedRecord]]:
    """(profiles, clicks): the records of each topic, in production order."""
    profiles: list[GeneratedRecord] = []
    clicks: list[GeneratedRecord] = []
    for record in records:
        (profiles if record.topic_role == PROFILES else clicks).append(record)
    return profiles, clicks
