"""What :mod:`clickstream.synthetic` generates: :class:`GenerateOptions`, declared
once; each field is also a command-line option of ``python -m clickstream.generate``."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import datetime
from typing import Any

DEFAULT_START = "2026-01-01T00:00:00+00:00"


def _option(default: Any, help: str | None = None, **cli: Any) -> Any:
    """A field of :class:`GenerateOptions`; ``help`` (and ``cli``) make its
    command-line option ``--name-with-dashes`` (see :func:`add_cli_options`)."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


@dataclasses.dataclass(frozen=True)
class GenerateOptions:
    """What to generate. Defaults give a small, fixed, reproducible data set.

    Each field is also a command-line option of ``python -m clickstream.generate``.
    """

    users: int = _option(100)
    clicks: int = _option(1000)
    versions_per_user: int = _option(3)
    seed: int = _option(42)
    start: str = _option(
        DEFAULT_START,
        f"event time of the first event, ISO-8601 with offset (default {DEFAULT_START}; ignored with --rate)",
    )
    span_seconds: float = _option(3600.0, "event-time span of the data (with --rate: clicks / rate)")
    #: At a rate, event time is the scheduled send time (i.e. now) and
    #: :func:`generate_records` sleeps to keep the pace.
    rate: float = _option(0.0, "clicks per second, event time = now (0 = as fast as possible)")
    bad_fraction: float = _option(0.0, "extra bad records per topic, as a fraction of its good records")
    unknown_fraction: float = _option(0.0, "fraction of clicks whose user has no profile")
    out_of_order_ms: int = _option(0, "max random jitter subtracted from click event times")
    #: False: profiles and clicks merged by event time.
    profiles_first: bool = _option(
        True,
        "produce all profiles before clicks (default)",
        off=("--interleave", "merge profiles and clicks by event time"),
    )
    numeric_user_ids: bool = _option(False, 'integer user ids in clicks (42), strings in profiles ("42")')

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


def add_cli_options(parser: argparse.ArgumentParser) -> None:
    """One command-line option per :class:`GenerateOptions` field."""
    for field in dataclasses.fields(GenerateOptions):
        flag = "--" + field.name.replace("_", "-")
        meta = field.metadata
        if "off" in meta:  # a pair of flags: on (the default) / off
            group = parser.add_mutually_exclusive_group()
            group.add_argument(
                flag, dest=field.name, action="store_true", default=field.default, help=meta["help"]
            )
            off_flag, off_help = meta["off"]
            group.add_argument(off_flag, dest=field.name, action="store_false", help=off_help)
        elif isinstance(field.default, bool):
            parser.add_argument(flag, action="store_true", help=meta["help"])
        else:
            parser.add_argument(flag, type=type(field.default), default=field.default, help=meta["help"])


def options_from_args(args: argparse.Namespace) -> GenerateOptions:
    """The :class:`GenerateOptions` of parsed :func:`add_cli_options` options."""
    return GenerateOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(GenerateOptions)})
