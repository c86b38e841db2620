"""Encoding of join results into output messages (joined and unmatched topics).

Two shapes (``OUTPUT_SHAPE``). ``nested`` (the default) embeds the click's and
the profile's original JSON bytes unchanged (they were validated as JSON
objects when decoded), so nothing is re-encoded on the hot path::

    {"user_id": "u1", "click": {...as received...}, "profile": {...} | null,
     "click_ts": <ms>, "profile_ts": <ms> | null,
     "source": {"topic": "user_clicks", "partition": 0, "offset": 17}}

``flat`` puts the click's fields at the top level unchanged, then the
profile's fields with a prefix (``FLAT_PROFILE_PREFIX``, default
``profile_``), then the lineage under ``_join``::

    {...the click's fields..., "profile_tier": "gold", ...,
     "_join": {"click_ts": <ms>, "profile_ts": <ms> | null,
               "source": {"topic": "user_clicks", "partition": 0, "offset": 17}}}

When an output name is already a click field (``FLAT_COLLISION``): the click's
value is kept, the profile's (or the lineage's) wins, or the click is
dead-lettered with reason ``field_collision`` (stage ``encode_join``; the
dead letter has the click's original bytes and key, not its headers).

In both shapes the message key is the mapped key as UTF-8, and ``source`` is
the click's lineage: it identifies each output record uniquely.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import orjson

from operators.dead_letters import dead_letter_message
from operators.event_parsing import FIELD_COLLISION
from operators.metrics import DEAD_LETTERED, JOINED, UNMATCHED
from operators.records import (
    DeadLetter,
    JoinResult,
    OutBatch,
    OutMessage,
    SourceRecord,
    dumps_compact,
    new_out_message,
    slot_for,
)

#: The flat shape's lineage field.
LINEAGE_FIELD = "_join"
#: ``FLAT_COLLISION`` values the encoder branches on (the third is ``keep_profile``).
KEEP_CLICK, DEAD_LETTER = "keep_click", "dead_letter"


@dataclass(frozen=True)
class FlatShape:
    """Settings of the flat output shape."""

    prefix: str = "profile_"
    #: ``keep_click``, ``keep_profile`` or ``dead_letter``.
    collision: str = KEEP_CLICK


#: The nested value: key, click, profile, times, then the source prefix
#: (``_source_prefix``) and the offset. One format for both, no object built.
_NESTED = b'{"user_id":%b,"click":%b,"profile":%b,"click_ts":%d,"profile_ts":%b,%b%d}}'


@lru_cache(maxsize=4096)
def _source_prefix(topic: str, partition: int) -> tuple[bytes, bytes]:
    """(the JSON ``source`` up to its offset, the lineage id up to the offset)
    of a topic partition: computed once, so a record only formats its offset."""
    return (
        b'"source":{"topic":%b,"partition":%d,"offset":' % (orjson.dumps(topic), partition),
        b"%b/%d/" % (topic.encode(), partition),
    )


def encode_result(result: JoinResult) -> bytes:
    """The nested JSON value of one joined (or unmatched) click."""
    click, profile = result
    return _NESTED % (
        orjson.dumps(click.key),
        click.value,
        b"null" if profile is None else profile.value,
        click.ts_ms,
        b"null" if profile is None else b"%d" % profile.ts_ms,
        _source_prefix(click.topic, click.partition)[0],
        click.offset,
    )


def encode_flat(result: JoinResult, shape: FlatShape) -> bytes | str:
    """The flat JSON value of one click, or (a ``str``) why it collides."""
    click, profile = result
    out = orjson.loads(click.value)
    collision = shape.collision
    if profile is not None:
        prefix = shape.prefix
        for field, value in orjson.loads(profile.value).items():
            name = prefix + field
            if name in out:
                if collision == KEEP_CLICK:
                    continue
                if collision == DEAD_LETTER:
                    return f"profile field {field!r} is output as {name!r}, a click field"
            out[name] = value
    if LINEAGE_FIELD in out:
        if collision == DEAD_LETTER:
            return f"the lineage field {LINEAGE_FIELD!r} is a click field"
        if collision == KEEP_CLICK:
            return orjson.dumps(out)
    out[LINEAGE_FIELD] = {
        "click_ts": click.ts_ms,
        "profile_ts": None if profile is None else profile.ts_ms,
        "source": {"topic": click.topic, "partition": click.partition, "offset": click.offset},
    }
    return orjson.dumps(out)


def _collision_dead_letter(result: JoinResult, detail: str, dlq_topic: str) -> OutMessage:
    click = result.click
    record = SourceRecord(click.partition, click.offset, click.message_key, click.value, None)
    DEAD_LETTERED.labels(click.topic, FIELD_COLLISION).inc()
    return dead_letter_message(
        DeadLetter(record, click.topic, FIELD_COLLISION, detail, "encode_join"), dlq_topic
    )


#: An output topic's sink slots: (the first slot's index, how many). The
#: message of key ``k`` goes to slot ``first + crc32(k) % count``
#: (``connectors.output_layout.OutputLayout.slot_range``).
SlotRange = Callable[[str], tuple[int, int]]

#: The nested shape's two formats: matched (profile and its time) and unmatched.
_MATCHED = b'{"user_id":%b,"click":%b,"profile":%b,"click_ts":%d,"profile_ts":%d,%b%d}}'
_UNMATCHED = b'{"user_id":%b,"click":%b,"profile":null,"click_ts":%d,"profile_ts":null,%b%d}}'

#: key -> (its JSON string, its UTF-8 bytes): user ids repeat, and both cost a
#: call each. Emptied when full, so memory stays bounded with many users
#: (about 150 bytes an entry: 20 MB when full).
_KEY_BYTES: dict[str, tuple[bytes, bytes]] = {}
_KEY_BYTES_MAX = 1 << 17


def _key_bytes(key: str) -> tuple[bytes, bytes]:
    if len(_KEY_BYTES) >= _KEY_BYTES_MAX:
        _KEY_BYTES.clear()
    pair = _KEY_BYTES[key] = (dumps_compact(key), key.encode())
    return pair


def encode_results(
    results: list[JoinResult],
    joined_topic: str,
    unmatched_topic: str | None,
    flat: FlatShape | None = None,
    dlq_topic: str | None = None,
    pairs: bool = False,
) -> list[OutMessage]:
    """Messages for a list of results.

    ``unmatched_topic=None`` is left-join output: every click goes to
    ``joined_topic``. Otherwise (inner join) clicks without a profile go to
    ``unmatched_topic``. ``flat``: the flat shape (``dlq_topic`` receives
    colliding clicks when its policy is ``dead_letter``); None: nested.
    ``pairs``: a click may have several results (interval join), so a matched
    result's lineage names the profile version too.
    """
    groups = _encode([results], joined_topic, unmatched_topic, flat, dlq_topic, pairs, None)
    return groups.get(0, [])


def encode_routed(
    result_lists: list[list[JoinResult]],
    joined_topic: str,
    unmatched_topic: str | None,
    flat: FlatShape | None,
    dlq_topic: str,
    pairs: bool,
    slot_range: SlotRange,
) -> list[tuple[str, list[OutMessage]]]:
    """:func:`encode_results` for several lists, each message already grouped
    by its sink slot (``(str(slot), messages)``, as the exactly-once sink's
    ``route`` step emits): one pass over the results instead of two."""
    groups = _encode(result_lists, joined_topic, unmatched_topic, flat, dlq_topic, pairs, slot_range)
    return [(str(slot), group) for slot, group in groups.items()]


def _encode(
    result_lists: list[list[JoinResult]],
    joined_topic: str,
    unmatched_topic: str | None,
    flat: FlatShape | None,
    dlq_topic: str | None,
    pairs: bool,
    slot_range: SlotRange | None,
) -> dict[int, OutBatch]:
    """The messages of every result, grouped by sink slot (all in slot 0
    without ``slot_range``)."""
    groups: dict[int, OutBatch] = {}
    joined = unmatched = 0
    unmatched_to = unmatched_topic or joined_topic
    if slot_range is None:
        joined_slots = unmatched_slots = (0, 1)
    else:
        joined_slots, unmatched_slots = slot_range(joined_topic), slot_range(unmatched_to)
    prefixes, keys, crc32 = _source_prefix, _KEY_BYTES, zlib.crc32
    last_source: tuple[str, int] | None = None
    source = lineage_prefix = b""
    for results in result_lists:
        for result in results:
            click, profile = result
            # Results come in runs from one click partition: look its prefixes up once per run.
            if last_source is None or click.partition != last_source[1] or click.topic != last_source[0]:
                last_source = (click.topic, click.partition)
                source, lineage_prefix = prefixes(click.topic, click.partition)
            key_json, key = keys.get(click.key) or _key_bytes(click.key)
            if flat is not None:
                encoded = encode_flat(result, flat)
                if type(encoded) is str:
                    dead = _collision_dead_letter(result, encoded, dlq_topic or "")
                    slot = (
                        0 if slot_range is None else slot_for(slot_range(dead.topic), dead.key, dead.lineage)
                    )
                    groups.setdefault(slot, OutBatch()).append(dead)
                    continue
                value = encoded
            elif profile is None:  # nested, inline: this loop is the hot path
                value = _UNMATCHED % (key_json, click.value, click.ts_ms, source, click.offset)
            else:
                value = _MATCHED % (
                    key_json,
                    click.value,
                    profile.value,
                    click.ts_ms,
                    profile.ts_ms,
                    source,
                    click.offset,
                )
            lineage = b"%b%d" % (lineage_prefix, click.offset)
            if profile is None:
                unmatched += 1
                topic, (first, count) = unmatched_to, unmatched_slots
            else:
                joined += 1
                topic, (first, count) = joined_topic, joined_slots
                if pairs:
                    lineage += b"|%b%d" % (prefixes(profile.topic, profile.partition)[1], profile.offset)
            slot = first + crc32(key) % count  # records.slot_for, inline
            group = groups.get(slot)
            message = new_out_message((topic, key, value, None, lineage))
            if group is None:
                groups[slot] = OutBatch((message,))
            else:
                group.append(message)
    JOINED.inc(joined)
    UNMATCHED.inc(unmatched)
    return groups
