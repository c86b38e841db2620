"""Typed configuration from environment variables, validated at start-up.

Three parts:

* :class:`~connectors.kafka_connection.KafkaConnection` (its own module): how
  to reach Kafka, ``KAFKA_BOOTSTRAP_SERVERS`` plus *any* librdkafka property
  as ``KAFKA_<PROPERTY>``, secrets hidden;
* the jobs' settings: :class:`CommonSettings` (every job: topics, the clicks
  record mapping, lateness, shards...) and one subclass per job;
* the record mapping (``CLICKS_KEY``, ``CLICKS_TIME``... see the README's
  "Your own topics"), turned into :class:`operators.record_mapping.RecordMapping`
  objects by :meth:`CommonSettings.clicks_mapping` and
  :meth:`ClicksSettings.profiles_mapping`.

A bad value raises :class:`ConfigError` with one line per bad variable, named
as the user wrote it, and without echoing secret values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connectors.kafka_connection import KafkaConnection
from dataflows.choices import (
    FlatCollision,
    IsoWithoutOffset,
    JoinMode,
    JoinStrategy,
    OutOfRangePolicy,
    OutputShape,
    TimeFallback,
    TimeFormat,
    _key_path,
    _time_path,
)
from operators.event_parsing import DEFAULT_EVENT_TIME_MIN_MS, Reject, parse_iso
from operators.record_mapping import MESSAGE_TIMESTAMP, RecordMapping


class ConfigError(SystemExit):
    """Configuration is unusable. Uncaught, it exits the process with status 1,
    printing only its message (no traceback)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CommonSettings(BaseSettings):
    """Settings every job in the package shares (same variable names everywhere)."""

    model_config = SettingsConfigDict(
        case_sensitive=True, extra="ignore", frozen=True, populate_by_name=False
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what :func:`load_settings` passes: a mapping given to it is the
        whole environment, whatever the process's own environment holds."""
        return (init_settings,)

    clicks_topic: str = Field("user_clicks", alias="CLICKS_TOPIC", min_length=1)
    dlq_topic: str = Field("dead_letters", alias="DLQ_TOPIC", min_length=1)
    kafka_tail: bool = Field(
        True,
        alias="KAFKA_TAIL",
        description="false: stop when every input partition reaches its end",
    )
    on_input_offset_out_of_range: OutOfRangePolicy = Field(
        OutOfRangePolicy.FAIL,
        alias="ON_INPUT_OFFSET_OUT_OF_RANGE",
        description="a stored input offset outside its partition (topic recreated, "
        "records deleted): fail, or resume at the partition's earliest or latest offset",
    )
    allowed_lateness_seconds: float = Field(
        60.0,
        alias="ALLOWED_LATENESS_SECONDS",
        ge=0,
        description="how far behind the newest event time a record may arrive and "
        "still be handled as on time",
    )
    source_batch_size: int = Field(
        1000,
        alias="SOURCE_BATCH_SIZE",
        gt=0,
        le=100_000,
        description="max messages taken from one partition per poll",
    )
    max_record_bytes: int = Field(
        1_000_000,
        alias="MAX_RECORD_BYTES",
        ge=1024,
        description="input records with a larger value are dead-lettered (too_large)",
    )
    metrics_port: int = Field(
        0,
        alias="METRICS_PORT",
        ge=0,
        le=65535,
        description="serve Prometheus metrics on this port (0: off)",
    )
    progress_interval_seconds: float = Field(
        10.0,
        alias="PROGRESS_INTERVAL_SECONDS",
        ge=0,
        description="log a progress line this often (0: off)",
    )
    health_stall_seconds: float = Field(
        120.0,
        alias="HEALTH_STALL_SECONDS",
        gt=0,
        description="/healthz fails when input is pending and no epoch completed for this long",
    )
    state_shards: int = Field(
        16,
        alias="STATE_SHARDS",
        ge=1,
        le=4096,
        description="shards of keyed state (the unit of parallelism of the join "
        "and window state); fixed for the life of a recovery store",
    )
    clicks_key: str = Field("user_id", alias="CLICKS_KEY")
    clicks_time: str = Field("ts", alias="CLICKS_TIME")
    clicks_time_fallback: TimeFallback = Field(TimeFallback.TIMESTAMP, alias="CLICKS_TIME_FALLBACK")
    clicks_time_format: TimeFormat = Field(TimeFormat("auto"), alias="CLICKS_TIME_FORMAT")
    iso_without_offset: IsoWithoutOffset = Field(IsoWithoutOffset.REJECT, alias="ISO_WITHOUT_OFFSET")
    event_time_min_ms: int = Field(
        DEFAULT_EVENT_TIME_MIN_MS,
        alias="EVENT_TIME_MIN",
        description="the earliest plausible event time (ISO-8601 with offset, or epoch ms)",
    )

    _key_paths = field_validator("clicks_key", mode="before")(_key_path)
    _time_paths = field_validator("clicks_time", mode="before")(_time_path)

    @field_validator("event_time_min_ms", mode="before")
    @classmethod
    def _event_time_min(cls, value: Any) -> int:
        if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
            try:
                ms = parse_iso(value.strip(), "EVENT_TIME_MIN")
            except Reject as rej:
                raise ValueError(
                    f"must be an ISO-8601 time with an offset or epoch ms: {rej.detail}"
                ) from None
        else:
            ms = int(value)
        if ms < 0:
            raise ValueError("must not be before 1970-01-01T00:00:00Z")
        if ms > datetime.now(UTC).timestamp() * 1000:
            raise ValueError("is in the future: every event would be refused")
        return ms

    def _mapping(self, role: str, keep: tuple[str, ...] | None = None) -> RecordMapping:
        return RecordMapping(
            role,
            getattr(self, f"{role}_key"),
            getattr(self, f"{role}_time"),
            getattr(self, f"{role}_time_fallback").value,
            getattr(self, f"{role}_time_format").value,
            self.iso_without_offset.value,
            self.event_time_min_ms,
            keep,
        )

    def clicks_mapping(self) -> RecordMapping:
        """Where clicks keep their key and event time."""
        return self._mapping("clicks")

    def problems(self) -> list[str]:
        """Settings that are valid alone but contradict each other, one line each."""
        out = []
        for role in ("clicks", "profiles"):
            if getattr(self, f"{role}_time", None) != MESSAGE_TIMESTAMP:
                continue
            fmt = getattr(self, f"{role}_time_format").value
            if fmt not in ("auto", "epoch_ms"):
                out.append(
                    f"{role.upper()}_TIME_FORMAT: {fmt} contradicts {role.upper()}_TIME=@timestamp "
                    "(the Kafka message timestamp is always epoch milliseconds)"
                )
        return out


class ClicksSettings(CommonSettings):
    """The clicks enrichment job (``dataflows.clicks``)."""

    profiles_topic: str = Field("user_profiles", alias="PROFILES_TOPIC", min_length=1)
    joined_topic: str = Field("joined_data", alias="JOINED_TOPIC", min_length=1)
    unmatched_topic: str = Field("unmatched_clicks", alias="UNMATCHED_TOPIC", min_length=1)
    join_mode: JoinMode = Field(JoinMode.LEFT, alias="JOIN_MODE")
    join_strategy: JoinStrategy = Field(JoinStrategy.ASOF, alias="JOIN_STRATEGY")
    profile_ttl_seconds: float = Field(
        7 * 24 * 3600.0,
        alias="PROFILE_TTL_SECONDS",
        gt=0,
        description="a profile version older than this at the click's event time does not match",
    )
    profile_wait_seconds: float = Field(
        10.0,
        alias="PROFILE_WAIT_SECONDS",
        ge=0,
        description="processing time a click waits for the profiles input to pass "
        "its event time before it is resolved with what is known",
    )
    window_seconds: float = Field(
        1800.0,
        alias="WINDOW_SECONDS",
        gt=0,
        description="window length of the window join strategy",
    )
    interval_before_seconds: float = Field(
        5.0,
        alias="INTERVAL_BEFORE_SECONDS",
        ge=0,
        description="interval strategy: a version up to this much before the click matches",
    )
    interval_after_seconds: float = Field(
        5.0,
        alias="INTERVAL_AFTER_SECONDS",
        ge=0,
        description="interval strategy: a version up to this much after the click matches",
    )
    late_topic: str = Field("late_clicks", alias="LATE_TOPIC", min_length=1)
    profiles_key: str = Field("user_id", alias="PROFILES_KEY")
    profiles_time: str = Field("updated_at", alias="PROFILES_TIME")
    profiles_time_fallback: TimeFallback = Field(TimeFallback.TIMESTAMP, alias="PROFILES_TIME_FALLBACK")
    profiles_time_format: TimeFormat = Field(TimeFormat("auto"), alias="PROFILES_TIME_FORMAT")
    output_shape: OutputShape = Field(OutputShape.NESTED, alias="OUTPUT_SHAPE")
    flat_profile_prefix: str = Field("profile_", alias="FLAT_PROFILE_PREFIX")
    flat_collision: FlatCollision = Field(FlatCollision.KEEP_CLICK, alias="FLAT_COLLISION")
    profile_fields: tuple[str, ...] | None = Field(None, alias="PROFILE_FIELDS")

    _profile_key_paths = field_validator("profiles_key", mode="before")(_key_path)
    _profile_time_paths = field_validator("profiles_time", mode="before")(_time_path)

    @field_validator("profile_fields", mode="before")
    @classmethod
    def _field_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            fields = tuple(f.strip() for f in value.split(","))
            if not any(fields):
                raise ValueError("lists no field (unset it to keep every field)")
            if not all(fields):
                raise ValueError("has an empty field name")
            return fields
        return value

    def profiles_mapping(self) -> RecordMapping:
        """Where profiles keep their key and event time (and which fields are kept)."""
        return self._mapping("profiles", self.profile_fields)

    def problems(self) -> list[str]:
        out = super().problems()
        if self.output_shape != OutputShape.FLAT:
            for name, var in (
                ("flat_profile_prefix", "FLAT_PROFILE_PREFIX"),
                ("flat_collision", "FLAT_COLLISION"),
            ):
                if name in self.model_fields_set:
                    out.append(f"{var}: only applies with OUTPUT_SHAPE=flat (OUTPUT_SHAPE is nested)")
        return out


class WindowedSettings(CommonSettings):
    """Settings shared by the windowed jobs."""

    late_topic: str = Field("late_clicks", alias="LATE_TOPIC", min_length=1)


class TopUsersSettings(WindowedSettings):
    """``dataflows.top_users``: top users per tumbling window."""

    window_seconds: float = Field(1800.0, alias="WINDOW_SECONDS", gt=0)
    top_n: int = Field(10, alias="TOP_N", ge=1, le=10_000)
    top_users_topic: str = Field("top_users", alias="TOP_USERS_TOPIC", min_length=1)


class AlertsSettings(WindowedSettings):
    """``dataflows.alerts``: per-user sliding-window click-rate alerts."""

    rate_window_seconds: float = Field(60.0, alias="RATE_WINDOW_SECONDS", gt=0)
    rate_slide_seconds: float = Field(10.0, alias="RATE_SLIDE_SECONDS", gt=0)
    alert_threshold: int = Field(100, alias="ALERT_THRESHOLD", ge=0)
    alerts_topic: str = Field("click_alerts", alias="ALERTS_TOPIC", min_length=1)


class SessionsSettings(WindowedSettings):
    """``dataflows.sessions``: per-user session windows."""

    session_gap_seconds: float = Field(1800.0, alias="SESSION_GAP_SECONDS", gt=0)
    sessions_topic: str = Field("user_sessions", alias="SESSIONS_TOPIC", min_length=1)


def _describe(error: ErrorDetails, fields: dict[str, Any]) -> str:
    loc = error.get("loc") or ("?",)
    name = str(loc[0])
    field = fields.get(name)
    env_name = field.alias if field is not None and field.alias else name
    shown = error.get("input")
    if isinstance(shown, (dict, list)) or shown is None:
        got = ""
    else:
        got = f" (got {str(shown)!r})"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{env_name}: {message}{got}"


def load_settings(cls: type[CommonSettings], environ: Mapping[str, str] | None = None):
    """Read and validate ``cls`` and the Kafka connection from the environment.

    Returns ``(settings, kafka)``. Raises :class:`ConfigError` naming each bad
    variable.
    """
    env = dict(os.environ if environ is None else environ)
    problems = []
    settings = None
    kafka = None
    try:
        # Only pass variables the model knows, so nothing else is read.
        known = {f.alias for f in cls.model_fields.values() if f.alias}
        settings = cls.model_validate({k: v for k, v in env.items() if k in known})
    except ValidationError as exc:
        problems += [_describe(e, cls.model_fields) for e in exc.errors()]
    else:
        problems += settings.problems()
    try:
        kafka = KafkaConnection.from_env(env)
    except ValidationError as exc:
        for e in exc.errors():
            loc = e.get("loc") or ("?",)
            var = "KAFKA_BOOTSTRAP_SERVERS" if loc[0] == "bootstrap_servers" else str(loc[0])
            problems.append(f"{var}: {e.get('msg', 'invalid')}")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return settings, kafka
