"""What the command-line tools (generator, topic reader, DLQ replay, demo,
benchmarks) share: their Kafka config from ``KAFKA_*`` variables, one table
printer, and one way to show untrusted bytes on a terminal."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class UsageError(ValueError):
    """The command cannot run as asked (exit status 2, nothing produced)."""


def kafka_config(bootstrap_servers: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The librdkafka config from ``KAFKA_*`` variables (SASL included).

    Raises :class:`UsageError` without echoing any value.
    """
    from pydantic import ValidationError

    from dataflows.settings import KafkaConnection

    try:
        config = KafkaConnection.from_env(environ).to_librdkafka()
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            loc = e.get("loc") or ("?",)
            var = "KAFKA_BOOTSTRAP_SERVERS" if loc[0] == "bootstrap_servers" else str(loc[0])
            problems.append(f"{var}: {e.get('msg', 'invalid')}")
        raise UsageError("invalid Kafka configuration: " + "; ".join(problems)) from None
    if bootstrap_servers:
        config["bootstrap.servers"] = bootstrap_servers
    return config


def table(
    rows: Iterable[Sequence[Any]],
    headers: Sequence[str] | None = None,
    align: str = "",
    indent: str = "",
    gap: str = "  ",
) -> list[str]:
    """The lines of a plain-text table: every cell as ``str``, each column as
    wide as its widest cell, ``align`` one letter per column (``l`` or ``r``;
    missing letters: ``l``). ``headers`` are followed by a line of dashes.
    Trailing spaces are stripped."""
    cells = [[str(c) for c in row] for row in rows]
    if headers is not None:
        cells.insert(0, [str(h) for h in headers])
    if not cells:
        return []
    columns = max(len(row) for row in cells)
    widths = [max((len(row[i]) for row in cells if i < len(row)), default=0) for i in range(columns)]
    align = align.ljust(columns, "l")

    def line(row: Sequence[str]) -> str:
        parts = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align, strict=False)]
        return (indent + gap.join(parts)).rstrip()

    lines = [line(row) for row in cells]
    if headers is not None:
        lines.insert(1, line(["-" * w for w in widths]))
    return lines


def preview(data: bytes | None, width: int = 60) -> str:
    """Bytes shown safely on a terminal: UTF-8 text with every non-printable
    character, invalid byte and backslash escaped, cut at ``width`` bytes."""
    if data is None:
        return "<null>"
    if not data:
        return "<empty>"
    head = data[:width].decode("utf-8", "surrogateescape")
    out = []
    for ch in head:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            # Python's own escape (\n, \t, \x1b, \u202e ...), without the quotes.
            out.append(repr(ch)[1:-1])
    text = "".join(out)
    if len(data) > width:
        text += f"... (+{len(data) - width} bytes)"
    return text
