"""Typed configuration from environment variables, validated at start-up.

Two parts:

* :class:`KafkaConnection`: how to reach Kafka. ``KAFKA_BOOTSTRAP_SERVERS``
  plus *any* librdkafka property, given as ``KAFKA_<PROPERTY>`` with dots
  written as underscores (``KAFKA_SASL_USERNAME`` -> ``sasl.username``).
  Secret-looking properties are held as ``SecretStr`` so they never show in
  ``repr``, logs or error messages; :meth:`KafkaConnection.to_librdkafka`
  gives the plain dict for confluent-kafka, and
  :meth:`KafkaConnection.from_librdkafka` turns such a dict back.
* :class:`ClicksSettings`: the clicks enrichment job's own settings.

A bad value raises :class:`ConfigError` with one line per bad variable, named
as the user wrote it, and without echoing secret values.
"""

from __future__ import annotations

import os
from enum import Enum
from typing import Any, Dict, Mapping, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Environment variables with the KAFKA_ prefix that are ours, not librdkafka's.
NON_LIBRDKAFKA_KAFKA_VARS = frozenset({"KAFKA_TAIL"})

#: Substrings that mark a librdkafka property as secret.
SECRET_MARKERS = ("password", "secret", "key", "token", "credentials", "jaas")
#: Properties that contain a marker but are not secret.
NOT_SECRET = frozenset(
    {
        "ssl.key.location",
        "ssl.keystore.location",
        "ssl.certificate.location",
        "ssl.ca.location",
        "ssl.crl.location",
        "sasl.kerberos.keytab",
        "sasl.kerberos.kinit.cmd",
        "sasl.kerberos.service.name",
        "sasl.kerberos.principal",
        "sasl.kerberos.min.time.before.relogin",
    }
)


class ConfigError(SystemExit):
    """Configuration is unusable. Uncaught, it exits the process with status 1,
    printing only its message (no traceback)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def is_secret_property(name: str) -> bool:
    """Whether a librdkafka property holds a secret that must never be logged."""
    return name not in NOT_SECRET and any(m in name for m in SECRET_MARKERS)


def env_name_for_property(prop: str) -> str:
    """``sasl.username`` -> ``KAFKA_SASL_USERNAME``."""
    return "KAFKA_" + prop.replace(".", "_").upper()


class KafkaConnection(BaseModel):
    """Everything needed to build a librdkafka client, secrets hidden."""

    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str = "localhost:9092"
    #: Other librdkafka properties, by their librdkafka name.
    properties: Dict[str, str] = Field(default_factory=dict)
    #: Secret librdkafka properties (passwords, keys), by their librdkafka name.
    secrets: Dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_look_like_host_port(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("must list at least one host:port")
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return ",".join(servers)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "KafkaConnection":
        """Collect ``KAFKA_*`` variables (except our own ``KAFKA_TAIL``)."""
        props: Dict[str, str] = {}
        for name, value in environ.items():
            if not name.startswith("KAFKA_") or name in NON_LIBRDKAFKA_KAFKA_VARS:
                continue
            prop = name[len("KAFKA_") :].lower().replace("_", ".")
            if prop:
                props[prop] = value
        return cls.from_librdkafka(props)

    @classmethod
    def from_librdkafka(cls, config: Mapping[str, Any]) -> "KafkaConnection":
        """Build from a librdkafka config dict (the inverse of :meth:`to_librdkafka`)."""
        props = {k: str(v) for k, v in config.items()}
        servers = props.pop("bootstrap.servers", "localhost:9092")
        secrets = {k: SecretStr(v) for k, v in props.items() if is_secret_property(k)}
        plain = {k: v for k, v in props.items() if k not in secrets}
        return cls(bootstrap_servers=servers, properties=plain, secrets=secrets)

    def to_librdkafka(self) -> Dict[str, str]:
        """The plain librdkafka config dict, secrets included: hand it to clients only."""
        config = {"bootstrap.servers": self.bootstrap_servers}
        config.update(self.properties)
        config.update({k: v.get_secret_value() for k, v in self.secrets.items()})
        return config

    def redacted(self) -> Dict[str, str]:
        """The config dict with secret values replaced, safe to log."""
        config = {"bootstrap.servers": self.bootstrap_servers}
        config.update(self.properties)
        config.update({k: "**********" for k in self.secrets})
        return config


class JoinMode(str, Enum):
    """What happens to a click that finds no profile."""

    #: Emitted to JOINED_TOPIC with ``"profile": null``.
    LEFT = "left"
    #: Emitted to UNMATCHED_TOPIC instead.
    INNER = "inner"


class JoinStrategy(str, Enum):
    """Which implementation joins clicks with profiles."""

    #: Default. Event-time as-of join on a custom stateful operator:
    #: the profile version valid at the click's event time, TTL, bounded wait.
    ASOF = "asof"
    #: Bytewax ``join_window``: clicks and profiles meet in the same
    #: event-time tumbling window.
    WINDOW = "window"
    #: Bytewax ``join`` in running mode: the latest profile seen so far,
    #: in processing order.
    RUNNING = "running"


class CommonSettings(BaseSettings):
    """Settings every job in the package shares (same variable names everywhere)."""

    model_config = SettingsConfigDict(
        case_sensitive=True, extra="ignore", frozen=True, populate_by_name=False
    )

    clicks_topic: str = Field("user_clicks", alias="CLICKS_TOPIC", min_length=1)
    dlq_topic: str = Field("dead_letters", alias="DLQ_TOPIC", min_length=1)
    kafka_tail: bool = Field(
        True,
        alias="KAFKA_TAIL",
        description="false: stop when every input partition reaches its end",
    )
    allowed_lateness_seconds: float = Field(
        60.0,
        alias="ALLOWED_LATENESS_SECONDS",
        ge=0,
        description="how far behind the newest event time a record may arrive and "
        "still be handled as on time",
    )
    source_batch_size: int = Field(
        1000, alias="SOURCE_BATCH_SIZE", gt=0, le=100_000,
        description="max messages taken from one partition per poll",
    )
    max_record_bytes: int = Field(
        1_000_000, alias="MAX_RECORD_BYTES", ge=1024,
        description="input records with a larger value are dead-lettered (too_large)",
    )
    metrics_port: int = Field(
        0, alias="METRICS_PORT", ge=0, le=65535,
        description="serve Prometheus metrics on this port (0: off)",
    )
    progress_interval_seconds: float = Field(
        10.0, alias="PROGRESS_INTERVAL_SECONDS", ge=0,
        description="log a progress line this often (0: off)",
    )
    state_shards: int = Field(
        16, alias="STATE_SHARDS", ge=1, le=4096,
        description="shards of keyed state (the unit of parallelism of the join "
        "and window state); fixed for the life of a recovery store",
    )


class ClicksSettings(CommonSettings):
    """The clicks enrichment job (``dataflows.clicks``)."""

    profiles_topic: str = Field("user_profiles", alias="PROFILES_TOPIC", min_length=1)
    joined_topic: str = Field("joined_data", alias="JOINED_TOPIC", min_length=1)
    unmatched_topic: str = Field(
        "unmatched_clicks", alias="UNMATCHED_TOPIC", min_length=1
    )
    join_mode: JoinMode = Field(JoinMode.LEFT, alias="JOIN_MODE")
    join_strategy: JoinStrategy = Field(JoinStrategy.ASOF, alias="JOIN_STRATEGY")
    profile_ttl_seconds: float = Field(
        7 * 24 * 3600.0,
        alias="PROFILE_TTL_SECONDS",
        gt=0,
        description="a profile version older than this at the click's event time "
        "does not match",
    )
    profile_wait_seconds: float = Field(
        10.0,
        alias="PROFILE_WAIT_SECONDS",
        ge=0,
        description="processing time a click waits for the profiles input to pass "
        "its event time before it is resolved with what is known",
    )
    window_seconds: float = Field(
        1800.0, alias="WINDOW_SECONDS", gt=0,
        description="window length of the window join strategy",
    )


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


def _describe(error: Dict[str, Any], fields: Dict[str, Any]) -> str:
    loc = error.get("loc") or ("?",)
    name = str(loc[0])
    field = fields.get(name)
    env_name = field.alias if field is not None and field.alias else name
    shown = error.get("input")
    if isinstance(shown, (dict, list)) or shown is None:
        got = ""
    else:
        got = f" (got {str(shown)!r})"
    return f"{env_name}: {error.get('msg', 'invalid')}{got}"


def load_settings(cls: type[CommonSettings], environ: Optional[Mapping[str, str]] = None):
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
    try:
        kafka = KafkaConnection.from_env(env)
    except ValidationError as exc:
        for e in exc.errors():
            loc = e.get("loc") or ("?",)
            var = "KAFKA_BOOTSTRAP_SERVERS" if loc[0] == "bootstrap_servers" else str(loc[0])
            problems.append(f"{var}: {e.get('msg', 'invalid')}")
    if problems:
        raise ConfigError(
            "invalid configuration:\n  " + "\n  ".join(problems)
        )
    return settings, kafka
