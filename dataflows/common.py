"""Wiring shared by every job: settings from the environment, the runtime
start-up, the clicks input (decoded, with dead letters) and the Kafka output."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from connectors.client_logs import silent_logger
from connectors.exactly_once_sink import OutputLayout, kafka_output
from connectors.kafka_source import KafkaBatchSource
from dataflows.settings import CommonSettings, ConfigError, KafkaConnection, load_settings
from operators.dead_letters import dead_letter_messages
from operators.decode import DecodeOut, decode
from operators.late_output import late_click_message
from operators.metrics import LATE
from operators.record_mapping import RecordMapping
from operators.records import LateClick, OutMessage

S = TypeVar("S", bound=CommonSettings)


def job_settings(cls: type[S], check: Callable[[S], None] | None = None) -> tuple[S, KafkaConnection]:
    """Validated settings and Kafka connection from the environment, nothing else.

    ``check``: a job's own cross-field rule, run before the librdkafka
    properties are checked. Raises :class:`ConfigError` (which exits with
    only its message) when something is bad.
    """
    settings, kafka = load_settings(cls)
    if check is not None:
        check(settings)
    check_kafka_config(kafka)
    return settings, kafka


def check_kafka_config(kafka: KafkaConnection) -> None:
    """Reject unknown or invalid librdkafka properties before the dataflow starts."""
    from confluent_kafka import KafkaException, Producer

    # Without bootstrap.servers the client validates every property but never
    # connects; its warnings go to a silent logger.
    config: dict[str, Any] = {k: v for k, v in kafka.to_librdkafka().items() if k != "bootstrap.servers"}
    config["logger"] = silent_logger("clickstream.config_check")
    try:
        Producer(config)
    except KafkaException as exc:
        # librdkafka names the bad property; never echo a secret value.
        text = str(exc.args[0].str() if exc.args else exc)
        for secret in kafka.secrets.values():
            value = secret.get_secret_value()
            if value:
                text = text.replace(value, "**********")
        raise ConfigError(f"invalid configuration:\n  KAFKA_* librdkafka property: {text}") from None


def kafka_input(
    flow: Dataflow,
    step_id: str,
    topic: str,
    mapping: RecordMapping,
    settings: CommonSettings,
    config: dict[str, str],
    heartbeat: timedelta = timedelta(milliseconds=100),
) -> DecodeOut:
    """Read ``topic`` as position-reporting batches and decode them with ``mapping``.

    ``heartbeat``: how often a caught-up, idle partition reports its position.
    """
    source = KafkaBatchSource(
        config,
        topic,
        tail=settings.kafka_tail,
        batch_size=settings.source_batch_size,
        heartbeat_s=heartbeat.total_seconds(),
        # offsets committed for monitoring: KAFKA_GROUP_ID, else clickstream-<job>
        group_id=config.get("group.id") or f"clickstream-{flow.flow_id}",
        on_out_of_range=settings.on_input_offset_out_of_range,
        job=flow.flow_id,
    )
    return decode(
        f"decode_{step_id}",
        op.input(f"{step_id}_in", flow, source),
        mapping,
        settings.max_record_bytes,
    )


def clicks_input(flow: Dataflow, settings: CommonSettings, config: dict[str, str]) -> DecodeOut:
    return kafka_input(flow, "clicks", settings.clicks_topic, settings.clicks_mapping(), settings, config)


def output_layout(config: dict[str, str], dlq_topic: str, topics: list[str]) -> OutputLayout:
    """The sink slots of :func:`write_outputs` for ``topics`` and the DLQ, for
    a step that routes its own messages (see ``routed`` there)."""
    return OutputLayout(config, [*topics, dlq_topic])


def write_outputs(
    flow_step: str,
    config: dict[str, str],
    dlq_topic: str,
    dead: list[Stream],
    results: list[Stream],
    topics: list[str],
    routed: Stream[tuple[str, list[OutMessage]]] | None = None,
    layout: OutputLayout | None = None,
) -> None:
    """Merge result message lists and dead letters into the exactly-once Kafka
    output; ``topics`` lists every topic the results may name. ``routed``:
    messages already grouped by sink slot with ``layout`` (from
    :func:`output_layout` with the same topics)."""
    dead_messages = op.map(
        f"{flow_step}_dead_letters",
        op.merge(f"{flow_step}_all_errs", *dead),
        lambda ds: dead_letter_messages(ds, dlq_topic),
    )
    kafka_output(
        "kafka_out",
        op.merge(f"{flow_step}_all_out", dead_messages, *results),
        config,
        [*topics, dlq_topic],
        routed,
        layout,
    )


def late_messages(
    step_id: str, late: Stream[list[LateClick]], job: str, late_topic: str
) -> Stream[list[OutMessage]]:
    """Late records as ``late_topic`` messages, counted in the job's ``late`` metric."""
    count = LATE.labels(job)

    def encode(ls: list[LateClick]) -> list[OutMessage]:
        count.inc(len(ls))
        return [late_click_message(x, late_topic) for x in ls]

    return op.map(step_id, late, encode)


def lazy_flow(flow_from_env: Callable[[], Dataflow]) -> Callable[[str], Dataflow]:
    """A module ``__getattr__`` that builds ``flow`` from the environment on first use,
    so ``python -m bytewax.run dataflows.<job>`` works and importing reads no environment."""

    def __getattr__(name: str) -> Dataflow:
        if name == "flow":
            return flow_from_env()
        raise AttributeError(name)

    return __getattr__
