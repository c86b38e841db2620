"""Alternative join: Bytewax's ``join_window`` over event-time tumbling windows, keyed by shard.

What: a click is matched with the latest profile version of the same user that
falls in the *same* tumbling window and whose ``ts_ms`` is ``<=`` the click's;
if there is none, the profile is ``None``. Windows are aligned to
``align_to``; times are the records' ``ts_ms`` as tz-aware UTC datetimes.

When this strategy fits: the classic windowed join (the seed paradigm) when
profile updates and the clicks they describe arrive close together in event
time. State is bounded: a window's records, dropped when it closes. The
price: a click only sees profiles from its own window, so a profile set
before the window opened is invisible (use the as-of join for that).

How: Bytewax's clocks, windows and wake-ups are per key, and their cost is per
key and per item (upstream #578: on backfill every wake-up is overdue). So the
join is keyed by *state shard* (``shard-NNN``, ``crc32(key) % shards``, as
:func:`operators.progress.shard_key`), not by user, and its items are
*pieces*: the events of one input list (e.g. one Kafka poll) that fall in the
same shard and the same window, stamped with their latest event time.
``join_window(insert_mode="product", emit_mode="final", ordered=False)``
keeps a shard's pieces per window and emits them when the window closes;
:mod:`operators.window_matching` then applies the rule per user and emits one
list of results per window.

Late pieces (stamped behind the shard's watermark, which is the shard's latest
event time minus ``wait_for_system_duration``, advancing with the wall clock;
a piece is stamped with its latest event, so it is late exactly when its
window already closed) are never dropped: late clicks are joined with
``None`` *and* appear on ``late_clicks``; late profiles appear on
``late_profiles`` only. Bytewax forgets a shard's watermark once all its
windows have closed, so a record arriving after that is not "late": it opens
its window afresh.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.dataflow import Stream, operator
from bytewax.operators.windowing import EventClock, TumblingWindower

from operators.progress import shard_keys
from operators.records import Click, Event, JoinResult, ProfileVersion, new_join_result
from operators.window_matching import WindowMatchLogic

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
#: Side index of each input in the join's (clicks, profiles) rows.
_CLICK_SIDE = 0
_PROFILE_SIDE = 1


@dataclass(frozen=True)
class WindowJoinOut:
    """Streams returned by :func:`window_join` (lists: one per window or piece)."""

    #: One result per click, late clicks included (with ``profile=None``).
    joined: Stream[list[JoinResult]]
    #: Clicks that arrived after their window closed in their shard.
    late_clicks: Stream[list[Click]]
    #: Profile versions that arrived after their window closed (not joined).
    late_profiles: Stream[list[ProfileVersion]]


class _Piece(NamedTuple):
    """Events of one input list in one shard and one window, and their latest time."""

    ts: datetime
    events: list[Event]


class _Splitter:
    """Splits an input list into ``(shard key, piece)`` items, one per (shard, window)."""

    def __init__(self, shards: int, length_ms: int, align_ms: int):
        self.keys = shard_keys(shards)
        self.shards = shards
        self.length_ms = length_ms
        self.align_ms = align_ms

    def __call__(self, events: list[Event]) -> list[tuple[str, _Piece]]:
        shards = self.shards
        length = self.length_ms
        align = self.align_ms
        crc32 = zlib.crc32
        groups: dict[tuple[int, int], list[Event]] = {}
        latest: dict[tuple[int, int], int] = {}
        for event in events:
            ts = event.ts_ms
            # shard_index(), inline: once per event
            where = (crc32(event.key.encode()) % shards, (ts - align) // length)
            group = groups.get(where)
            if group is None:
                groups[where] = [event]
                latest[where] = ts
            else:
                group.append(event)
                if ts > latest[where]:
                    latest[where] = ts
        keys = self.keys
        return [
            (keys[where[0]], _Piece(_EPOCH + timedelta(milliseconds=latest[where]), group))
            for where, group in groups.items()
        ]


def _piece_time(piece: _Piece) -> datetime:
    return piece.ts


def _late_events(side: int):
    def late(id_side_piece: tuple[int, tuple[int, _Piece]]) -> list[Event] | None:
        _window_id, (piece_side, piece) = id_side_piece
        return piece.events if piece_side == side else None

    return late


def _unmatched(clicks: list[Click]) -> list[JoinResult]:
    return [new_join_result((c, None)) for c in clicks]


def _check_whole_ms(name: str, value: timedelta) -> None:
    if value % _MS:
        msg = f"{name} must be a whole number of milliseconds; got {value!r}"
        raise ValueError(msg)


@operator
def window_join(
    step_id: str,
    clicks: Stream[list[Click]],
    profiles: Stream[list[ProfileVersion]],
    *,
    window_length: timedelta,
    wait_for_system_duration: timedelta,
    align_to: datetime,
    shards: int,
) -> WindowJoinOut:
    """Join each click with its user's latest profile in the same window.

    Inputs are lists of events (e.g. one per Kafka poll); Bytewax's cost is
    per item, so a list pays it once per (shard, window) it touches.
    ``window_length``: tumbling window size. ``align_to``: an instant that
    starts a window (tz-aware). ``wait_for_system_duration``: how far behind
    a shard's latest event time a record may be and still be joined; it must
    cover the skew between the click and profile topics (one clock per shard
    serves both). ``shards``: how many state shards (Bytewax keys). A
    window's results come out once the shard's watermark passes its end:
    about ``wait_for_system_duration`` of wall time after its last record,
    sooner if later records push the watermark past it, at the latest at
    EOF. Every click yields exactly one :class:`JoinResult`.
    """
    if window_length <= timedelta(0):
        msg = f"window_length must be positive; got {window_length!r}"
        raise ValueError(msg)
    if wait_for_system_duration < timedelta(0):
        msg = f"wait_for_system_duration must not be negative; got {wait_for_system_duration!r}"
        raise ValueError(msg)
    if align_to.tzinfo is None or align_to.utcoffset() is None:
        msg = f"align_to must be a tz-aware datetime; got {align_to!r}"
        raise ValueError(msg)
    if shards < 1:
        msg = f"shards must be at least 1; got {shards!r}"
        raise ValueError(msg)
    # Pieces are split by window in whole ms: it must agree with Bytewax's windower.
    _check_whole_ms("window_length", window_length)
    _check_whole_ms("align_to (since the Unix epoch)", align_to - _EPOCH)

    wait = wait_for_system_duration

    def wake_at(watermark_time: datetime) -> datetime | None:
        # Bytewax maps a window close time to the wall time to wake up at; the
        # default (the same instant) wakes `wait` too early and busy-polls.
        return watermark_time + wait

    split = _Splitter(shards, window_length // _MS, (align_to - _EPOCH) // _MS)
    click_pieces = op.flat_map("split_clicks", clicks, split)
    profile_pieces = op.flat_map("split_profiles", profiles, split)
    clock = EventClock(_piece_time, wait_for_system_duration=wait, to_system_utc=wake_at)
    windower = TumblingWindower(length=window_length, align_to=align_to)
    out = win.join_window(
        "join_window",
        clock,
        windower,
        click_pieces,
        profile_pieces,
        insert_mode="product",
        emit_mode="final",
        ordered=False,
    )
    # A window's rows, then its metadata: the matching step closes it on the latter.
    ends = op.merge("rows_and_ends", out.down, out.meta)
    matched = op.stateful_batch("match", ends, WindowMatchLogic)

    late_clicks = op.filter_map_value("late_clicks", out.late, _late_events(_CLICK_SIDE))
    late_profiles = op.filter_map_value("late_profiles", out.late, _late_events(_PROFILE_SIDE))
    unmatched = op.map_value("late_click_results", late_clicks, _unmatched)
    joined = op.merge("merge_results", matched, unmatched)
    return WindowJoinOut(
        joined=op.key_rm("unkey_joined", joined),
        late_clicks=op.key_rm("unkey_late_clicks", late_clicks),
        late_profiles=op.key_rm("unkey_late_profiles", late_profiles),
    )
