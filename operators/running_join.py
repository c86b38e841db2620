"""Alternative join: Bytewax's own running ``join``, latest profile received wins.

What: each click is enriched with the latest profile version *received so far*
for its user (processing order, not event time); ``None`` if none yet.

When this strategy fits: profiles are loaded (or compacted) long before the
clicks that need them, so "latest received" is the right version. It is the
simplest strategy and emits with no waiting, but its state is unbounded: one
click and one profile per user, kept forever (Bytewax's running join has no
TTL and never discards a key). Use the event-time as-of join when clicks and
profile updates race each other or when users churn.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from operators.records import Click, JoinResult, ProfileVersion

#: Where a click came from; unique per Kafka record.
ClickId = tuple[str, int, int]


def _user_key(record: Click | ProfileVersion) -> str:
    # Bytewax keys must be str; user ids already are.
    return record.key


def _click_id(click: Click) -> ClickId:
    return (click.topic, click.partition, click.offset)


def _only_new_clicks(
    last_emitted: ClickId | None,
    row: tuple[Click | None, ProfileVersion | None],
) -> tuple[ClickId | None, list[JoinResult]]:
    """Keep the row a new click triggered; drop rows a profile update triggered.

    A running join re-emits ``(last click, new profile)`` on every profile
    update. The click of such a row is the one emitted last for the user, so
    remembering its (topic, partition, offset) per user is enough to tell.
    """
    click, profile = row
    if click is None:
        # A profile arrived before any click of this user.
        return last_emitted, []
    click_id = _click_id(click)
    if click_id == last_emitted:
        return last_emitted, []
    return click_id, [JoinResult(click, profile)]


@operator
def running_join(
    step_id: str,
    clicks: Stream[Click],
    profiles: Stream[ProfileVersion],
) -> Stream[JoinResult]:
    """Enrich every click with its user's latest profile received so far.

    Emits exactly one :class:`JoinResult` per click, as soon as the click is
    processed (``profile`` is ``None`` if no profile of that user came first).
    State per user, kept forever: the last click, the last profile and the id
    of the last emitted click. Clicks are told apart by (topic, partition,
    offset), so two records with the same coordinates in a row count as one.
    """
    keyed_clicks = op.key_on("key_clicks", clicks, _user_key)
    keyed_profiles = op.key_on("key_profiles", profiles, _user_key)
    rows = op.join(
        "join",
        keyed_clicks,
        keyed_profiles,
        insert_mode="last",
        emit_mode="running",
    )
    results = op.stateful_flat_map("only_new_clicks", rows, _only_new_clicks)
    return op.key_rm("unkey", results)
