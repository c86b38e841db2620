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

from dataclasses import dataclass
from functools import lru_cache

import orjson

from operators.dead_letters import dead_letter_message
from operators.event_parsing import FIELD_COLLISION
from operators.metrics import DEAD_LETTERED, JOINED, UNMATCHED
from operators.records import DeadLetter, JoinResult, OutMessage, SourceRecord, new_out_message

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
    out: list[OutMessage] = []
    append = out.append
    joined = collided = 0
    unmatched_to = unmatched_topic or joined_topic
    nested, dumps, prefixes = _NESTED, orjson.dumps, _source_prefix
    for result in results:
        click, profile = result
        source, lineage_prefix = prefixes(click.topic, click.partition)
        if flat is None:  # encode_result, inline: this loop is the hot path
            value = nested % (
                dumps(click.key),
                click.value,
                b"null" if profile is None else profile.value,
                click.ts_ms,
                b"null" if profile is None else b"%d" % profile.ts_ms,
                source,
                click.offset,
            )
        else:
            encoded = encode_flat(result, flat)
            if type(encoded) is str:
                append(_collision_dead_letter(result, encoded, dlq_topic or ""))
                collided += 1
                continue
            value = encoded  # type: ignore[assignment]  # bytes: mypy does not narrow on `type(x) is not str`
        lineage = b"%b%d" % (lineage_prefix, click.offset)
        if profile is None:
            topic = unmatched_to
        else:
            joined += 1
            topic = joined_topic
            if pairs:
                lineage += b"|%b%d" % (prefixes(profile.topic, profile.partition)[1], profile.offset)
        append(new_out_message((topic, click.key.encode(), value, None, lineage)))
    unmatched = len(results) - joined - collided
    JOINED.inc(joined)
    UNMATCHED.inc(unmatched)
    return out
