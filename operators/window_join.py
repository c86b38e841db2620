"""Alternative join: Bytewax's ``join_window`` over event-time tumbling windows.

What: a click is matched with the latest profile version of the same user that
falls in the *same* tumbling window and whose ``ts_ms`` is ``<=`` the click's;
if there is none, the profile is ``None``. Windows are per user and aligned to
``align_to``; times are the records' ``ts_ms`` as tz-aware UTC datetimes.

When this strategy fits: the classic windowed join (the seed paradigm) when
profile updates and the clicks they describe arrive close together in event
time. State is bounded: per user and open window only the last click and the
last profile, dropped when the window closes. The price: a click only sees
profiles from its own window, so a profile set before the window opened is
invisible (use the as-of join for that).

How: ``join_window(insert_mode="last", emit_mode="running", ordered=True)``.
Ordered mode applies a window's records in event-time order once the
watermark passes them, and running mode emits ``(last click, last profile)``
after each one. Clicks are stamped one microsecond after their millisecond,
so at equal ``ts_ms`` a profile always comes first. Then a row was triggered
by a click exactly when ``profile is None or profile.ts_ms <= click.ts_ms``;
the rows profile updates trigger fail that test and are dropped, leaving
exactly one row per click without any extra state.

Late records (event time behind the user's watermark, which is the user's
latest ``ts`` minus ``wait_for_system_duration``, advancing with the wall
clock) are never dropped: a late click is joined with ``None`` *and* appears
on ``late_clicks``; a late profile appears on ``late_profiles`` only.
Bytewax forgets a user's watermark once all its windows have closed, so a
record arriving after that is not "late": it opens its window afresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.dataflow import Stream, operator
from bytewax.operators.windowing import EventClock, TumblingWindower

from operators.records import Click, JoinResult, ProfileVersion

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
#: Added to a click's timestamp so a profile of the same millisecond sorts first.
_CLICK_AFTER_PROFILE = timedelta(microseconds=1)
#: Side index of each input in the join's (clicks, profiles) tuples.
_CLICK_SIDE = 0
_PROFILE_SIDE = 1


@dataclass(frozen=True)
class WindowJoinOut:
    """Streams returned by :func:`window_join`."""

    #: One result per click, late clicks included (with ``profile=None``).
    joined: Stream[JoinResult]
    #: Clicks that arrived behind their user's watermark.
    late_clicks: Stream[Click]
    #: Profile versions that arrived behind their user's watermark (not joined).
    late_profiles: Stream[ProfileVersion]


class _Sided(NamedTuple):
    """An event with its side: the one clock of the join stamps clicks later."""

    is_click: bool
    event: Click


def _user_key(sided: _Sided) -> str:
    # Bytewax keys must be str; event keys already are.
    return sided.event.key


def _event_time(sided: _Sided) -> datetime:
    ts = _EPOCH + timedelta(milliseconds=sided.event.ts_ms)
    if sided.is_click:
        ts += _CLICK_AFTER_PROFILE
    return ts


def _click_row(
    id_row: tuple[int, tuple[_Sided | None, _Sided | None]],
) -> JoinResult | None:
    """Keep a row only if a click triggered it (see the module docstring)."""
    _window_id, (sided_click, sided_profile) = id_row
    if sided_click is None:
        return None
    click = sided_click.event
    profile = None if sided_profile is None else sided_profile.event
    if profile is not None and profile.ts_ms > click.ts_ms:
        # A profile later than the click was applied after it: not for it.
        return None
    return JoinResult(click, profile)


def _late_click(id_side_value: tuple[int, tuple[int, Any]]) -> Click | None:
    _window_id, (side, value) = id_side_value
    return value.event if side == _CLICK_SIDE else None


def _late_profile(
    id_side_value: tuple[int, tuple[int, Any]],
) -> ProfileVersion | None:
    _window_id, (side, value) = id_side_value
    return value.event if side == _PROFILE_SIDE else None


def _unmatched(click: Click) -> JoinResult:
    return JoinResult(click, None)


def _check_whole_ms(name: str, value: timedelta) -> None:
    if value % _MS:
        msg = f"{name} must be a whole number of milliseconds; got {value!r}"
        raise ValueError(msg)


@operator
def window_join(
    step_id: str,
    clicks: Stream[Click],
    profiles: Stream[ProfileVersion],
    *,
    window_length: timedelta,
    wait_for_system_duration: timedelta,
    align_to: datetime,
) -> WindowJoinOut:
    """Join each click with its user's latest profile in the same window.

    ``window_length``: tumbling window size. ``align_to``: an instant that
    starts a window (tz-aware). ``wait_for_system_duration``: how far behind a
    user's latest event time a record may be and still be joined; it must
    cover the skew between the click and profile topics (one clock per user
    serves both). A click's result comes out once the user's watermark passes
    it: about ``wait_for_system_duration`` of wall time after it arrives,
    sooner if later records of the user push the watermark past it, at the
    latest at EOF. Every click yields exactly one :class:`JoinResult`.
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
    # The 1 us click stamp must never move a click into another window.
    _check_whole_ms("window_length", window_length)
    _check_whole_ms("align_to (since the Unix epoch)", align_to - _EPOCH)

    wait = wait_for_system_duration

    def wake_at(watermark_time: datetime) -> datetime | None:
        # Bytewax maps a window/queue time to the wall time to wake up at; the
        # default (the same instant) wakes `wait` too early and busy-polls.
        return watermark_time + wait

    sided_clicks = op.map("side_clicks", clicks, lambda c: _Sided(True, c))
    sided_profiles = op.map("side_profiles", profiles, lambda p: _Sided(False, p))
    keyed_clicks = op.key_on("key_clicks", sided_clicks, _user_key)
    keyed_profiles = op.key_on("key_profiles", sided_profiles, _user_key)
    clock = EventClock(
        _event_time,
        wait_for_system_duration=wait,
        to_system_utc=wake_at,
    )
    windower = TumblingWindower(length=window_length, align_to=align_to)
    out = win.join_window(
        "join_window",
        clock,
        windower,
        keyed_clicks,
        keyed_profiles,
        insert_mode="last",
        emit_mode="running",
        ordered=True,
    )

    matched = op.filter_map_value("click_rows", out.down, _click_row)
    late_clicks = op.filter_map_value("late_clicks", out.late, _late_click)
    late_profiles = op.filter_map_value("late_profiles", out.late, _late_profile)
    unmatched = op.map_value("late_click_results", late_clicks, _unmatched)
    joined = op.merge("merge_results", matched, unmatched)
    return WindowJoinOut(
        joined=op.key_rm("unkey_joined", joined),
        late_clicks=op.key_rm("unkey_late_clicks", late_clicks),
        late_profiles=op.key_rm("unkey_late_profiles", late_profiles),
    )
