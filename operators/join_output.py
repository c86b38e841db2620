"""Encoding of join results into output messages (joined and unmatched topics).

The output value embeds the click's and the profile's original JSON bytes
unchanged (they were validated as JSON objects when decoded), so nothing is
re-encoded on the hot path::

    {"user_id": "u1", "click": {...as received...}, "profile": {...} | null,
     "click_ts": <ms>, "profile_ts": <ms> | null,
     "source": {"topic": "user_clicks", "partition": 0, "offset": 17}}

``source`` is the click's lineage: it identifies each output record uniquely.
"""

from __future__ import annotations

from typing import List

import orjson

from operators.metrics import JOINED, UNMATCHED
from operators.records import JoinResult, OutMessage, new_out_message


def encode_result(result: JoinResult) -> bytes:
    """The JSON value of one joined (or unmatched) click."""
    click, profile = result
    head = b'{"user_id":%b,"click":%b,"profile":%b,"click_ts":%d,"profile_ts":%b' % (
        orjson.dumps(click.user_id),
        click.value,
        b"null" if profile is None else profile.value,
        click.ts_ms,
        b"null" if profile is None else str(profile.ts_ms).encode(),
    )
    return head + b',"source":{"topic":%b,"partition":%d,"offset":%d}}' % (
        orjson.dumps(click.topic),
        click.partition,
        click.offset,
    )


def encode_results(
    results: List[JoinResult], joined_topic: str, unmatched_topic: str | None
) -> List[OutMessage]:
    """Messages for a list of results.

    ``unmatched_topic=None`` is left-join output: every click goes to
    ``joined_topic``. Otherwise (inner join) clicks without a profile go to
    ``unmatched_topic``.
    """
    out = []
    append = out.append
    unmatched = 0
    for result in results:
        topic = joined_topic
        if result.profile is None:
            unmatched += 1
            if unmatched_topic is not None:
                topic = unmatched_topic
        click = result.click
        lineage = b"%b/%d/%d" % (click.topic.encode(), click.partition, click.offset)
        append(new_out_message((topic, click.user_id.encode(), encode_result(result), None, lineage)))
    JOINED.inc(len(results) - unmatched)
    UNMATCHED.inc(unmatched)
    return out
