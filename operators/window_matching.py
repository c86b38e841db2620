"""The step after ``window_join``'s window: today's matching rule, per user, per closed window.

``join_window(insert_mode="product", emit_mode="final")`` emits, when a
shard's window closes, every combination of its click pieces and profile
pieces (``None`` for a side that got nothing). :class:`WindowMatchLogic`
collects those rows per window until the window's metadata (emitted right
after its rows) says it is closed, takes the distinct pieces back out of the
product, and matches every click of the window with the latest version of the
same user whose time is ``<=`` the click's (a tie: the one read later wins),
or ``None``. One result per click, one list per window.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from typing import Any

import bytewax.operators as op
from bytewax.operators.windowing import WindowMetadata

from operators.records import Click, JoinResult, ProfileVersion, new_join_result

#: A row of the window's product: (click piece or None, profile piece or None);
#: a piece is anything with the list of its events in ``.events``.
Row = tuple[Any, Any]


def distinct_pieces(rows: list[Row]) -> tuple[list, list]:
    """The click pieces and profile pieces a product of rows was made of.

    ``itertools.product`` emits ``(c0, p0), (c0, p1), ..., (c1, p0), ...``:
    the profile pieces are those paired with the first click piece, the click
    pieces one per run of that length. Pieces are compared with ``==`` (identity first, so
    cheap in one process; still right if a row was pickled on the way).
    """
    first = rows[0][0]
    width = 1  # profile pieces per click piece
    while width < len(rows) and _same(rows[width][0], first):
        width += 1
    clicks = [c for c, _ in rows[::width] if c is not None]
    profiles = [p for _, p in rows[:width] if p is not None]
    return clicks, profiles


def _same(a: Any, b: Any) -> bool:
    return a is b or a == b


def match_window(
    click_pieces: Iterable[list[Click]], profile_pieces: Iterable[list[ProfileVersion]]
) -> list[JoinResult]:
    """Each click with its user's latest version at or before it, in one window."""
    by_user: dict[str, list[ProfileVersion]] = {}
    for piece in profile_pieces:
        for version in piece:
            versions = by_user.get(version.key)
            if versions is None:
                by_user[version.key] = [version]
            else:
                versions.append(version)
    times: dict[str, list[int]] = {}
    for user, versions in by_user.items():
        versions.sort(key=_ts)  # stable: at equal times the one read later stays last
        times[user] = [v.ts_ms for v in versions]
    out: list[JoinResult] = []
    append = out.append
    for piece in click_pieces:
        for click in piece:
            versions = by_user.get(click.key)
            if versions is None:
                append(new_join_result((click, None)))
                continue
            index = bisect_right(times[click.key], click.ts_ms)
            append(new_join_result((click, versions[index - 1] if index else None)))
    return out


def _ts(event: ProfileVersion) -> int:
    return event.ts_ms


def _close(rows: list[Row], out: list[list[JoinResult]]) -> None:
    clicks, profiles = distinct_pieces(rows)
    results = match_window([c.events for c in clicks], [p.events for p in profiles])
    if results:
        out.append(results)


class WindowMatchLogic(op.StatefulBatchLogic):
    """One shard: rows of windows not yet closed; a window's results at its close."""

    def __init__(self, state: dict[int, list[Row]] | None):
        self.rows: dict[int, list[Row]] = {} if state is None else state

    def on_batch(self, values: list) -> tuple[list[list[JoinResult]], bool]:
        out: list[list[JoinResult]] = []
        rows = self.rows
        for window_id, value in values:
            if isinstance(value, WindowMetadata):
                window_rows = rows.pop(window_id, None)
                if window_rows:
                    _close(window_rows, out)
            else:
                rows.setdefault(window_id, []).append(value)
        return out, not rows

    def on_eof(self) -> tuple[list[list[JoinResult]], bool]:
        # Bytewax emits a window's metadata right after its rows, so nothing
        # should be left; if a window's metadata ever overtook its rows, its clicks
        # still get their results here.
        out: list[list[JoinResult]] = []
        for window_id in sorted(self.rows):
            _close(self.rows.pop(window_id), out)
        return out, True

    def snapshot(self) -> dict[int, list[Row]]:
        return {window_id: list(rows) for window_id, rows in self.rows.items()}
