"""How to reach Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` plus any librdkafka property
given as ``KAFKA_<PROPERTY>`` (dots written as underscores), secrets hidden.

:class:`KafkaConnection` holds secret-looking properties as ``SecretStr`` so they
never show in ``repr``, logs or error messages; :meth:`KafkaConnection.to_librdkafka`
gives the plain dict for confluent-kafka and :meth:`KafkaConnection.from_librdkafka`
turns such a dict back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

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


def is_secret_property(name: str) -> bool:
    """Whether a librdkafka property holds a secret that must never be logged."""
    return name not in NOT_SECRET and any(m in name for m in SECRET_MARKERS)


class KafkaConnection(BaseModel):
    """Everything needed to build a librdkafka client, secrets hidden."""

    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str = "localhost:9092"
    #: Other librdkafka properties, by their librdkafka name.
    properties: dict[str, str] = Field(default_factory=dict)
    #: Secret librdkafka properties (passwords, keys), by their librdkafka name.
    secrets: dict[str, SecretStr] = Field(default_factory=dict)

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
    def from_env(cls, environ: Mapping[str, str]) -> KafkaConnection:
        """Collect ``KAFKA_*`` variables (except our own ``KAFKA_TAIL``)."""
        props: dict[str, str] = {}
        for name, value in environ.items():
            if not name.startswith("KAFKA_") or name in NON_LIBRDKAFKA_KAFKA_VARS:
                continue
            prop = name[len("KAFKA_") :].lower().replace("_", ".")
            if prop:
                props[prop] = value
        return cls.from_librdkafka(props)

    @classmethod
    def from_librdkafka(cls, config: Mapping[str, Any]) -> KafkaConnection:
        """Build from a librdkafka config dict (the inverse of :meth:`to_librdkafka`)."""
        props = {k: str(v) for k, v in config.items()}
        servers = props.pop("bootstrap.servers", "localhost:9092")
        secrets = {k: SecretStr(v) for k, v in props.items() if is_secret_property(k)}
        plain = {k: v for k, v in props.items() if k not in secrets}
        return cls(bootstrap_servers=servers, properties=plain, secrets=secrets)

    def to_librdkafka(self) -> dict[str, str]:
        """The plain librdkafka config dict, secrets included: hand it to clients only."""
        config = {"bootstrap.servers": self.bootstrap_servers}
        config.update(self.properties)
        config.update({k: v.get_secret_value() for k, v in self.secrets.items()})
        return config

    def redacted(self) -> dict[str, str]:
        """The config dict with secret values replaced, safe to log."""
        config = {"bootstrap.servers": self.bootstrap_servers}
        config.update(self.properties)
        config.update({k: "**********" for k in self.secrets})
        return config
