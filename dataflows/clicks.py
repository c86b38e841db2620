"""The clicks enrichment job: ``user_clicks`` joined with ``user_profiles`` by ``user_id``.

Run it with ``python -m bytewax.run dataflows.clicks`` (add ``-w N`` for
threads, ``-i/-a`` for processes). Configuration comes from environment
variables (see ``clickstream.settings.ClicksSettings`` and the README).

::

    user_clicks ──> decode ──oks──> route ─┐                 ┌─> joined_data
                      └─errs─┐             ├─> asof_join ────┤   (unmatched_clicks
    user_profiles ─> decode ─┼─oks──> route ─┘  (shards)      │    in inner mode)
                      └─errs─┴──────────────────> dead_letters
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import List

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from clickstream.settings import (
    ClicksSettings,
    ConfigError,
    JoinMode,
    JoinStrategy,
    KafkaConnection,
    load_settings,
)
from operators.asof_join import asof_join
from operators.dead_letters import dead_letter_messages
from operators.decode import decode
from operators.event_parsing import parse_click, parse_profile
from operators.join_output import encode_results
from operators.kafka_sink import KafkaOutSink
from operators.kafka_source import KafkaBatchSource
from operators.records import DecodedBatch, JoinResult

log = logging.getLogger("dataflows.clicks")


def _items(batch: DecodedBatch) -> list:
    return batch.items


def _join(
    settings: ClicksSettings, clicks: Stream[DecodedBatch], profiles: Stream[DecodedBatch]
) -> Stream[List[JoinResult]]:
    """Join with the configured strategy; every valid click yields one result."""
    if settings.join_strategy == JoinStrategy.ASOF:
        return asof_join(
            "asof_join",
            clicks,
            profiles,
            ttl=timedelta(seconds=settings.profile_ttl_seconds),
            wait=timedelta(seconds=settings.profile_wait_seconds),
            lateness=timedelta(seconds=settings.allowed_lateness_seconds),
            shards=settings.join_shards,
        ).joined
    click_items = op.flat_map("click_items", clicks, _items)
    profile_items = op.flat_map("profile_items", profiles, _items)
    if settings.join_strategy == JoinStrategy.RUNNING:
        from operators.running_join import running_join

        results = running_join("running_join", click_items, profile_items)
    else:
        from operators.window_join import window_join

        results = window_join(
            "window_join",
            click_items,
            profile_items,
            window_length=timedelta(seconds=settings.window_seconds),
            wait_for_system_duration=timedelta(seconds=settings.allowed_lateness_seconds),
            align_to=datetime(1970, 1, 1, tzinfo=timezone.utc),
        ).joined
    return op.map("as_lists", results, lambda result: [result])


def build_flow(settings: ClicksSettings, kafka: KafkaConnection) -> Dataflow:
    """The clicks dataflow for the given settings."""
    config = kafka.to_librdkafka()
    flow = Dataflow("clicks")

    def source(topic: str) -> KafkaBatchSource:
        return KafkaBatchSource(
            config, topic, tail=settings.kafka_tail, batch_size=settings.source_batch_size
        )

    clicks_raw = op.input("clicks_in", flow, source(settings.clicks_topic))
    profiles_raw = op.input("profiles_in", flow, source(settings.profiles_topic))
    clicks = decode("decode_clicks", clicks_raw, parse_click)
    profiles = decode("decode_profiles", profiles_raw, parse_profile)

    results = _join(settings, clicks.oks, profiles.oks)
    unmatched_topic = settings.unmatched_topic if settings.join_mode == JoinMode.INNER else None
    joined_topic = settings.joined_topic
    encoded = op.map(
        "encode", results, lambda rs: encode_results(rs, joined_topic, unmatched_topic)
    )
    dlq_topic = settings.dlq_topic
    dead = op.map(
        "dead_letters",
        op.merge("all_errs", clicks.errs, profiles.errs),
        lambda ds: dead_letter_messages(ds, dlq_topic),
    )
    op.output("kafka_out", op.merge("all_out", encoded, dead), KafkaOutSink(config))
    return flow


def flow_from_env() -> Dataflow:
    """Build the dataflow from environment variables; exits with a clear message if bad."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings, kafka = load_settings(ClicksSettings)
    check_kafka_config(kafka)
    log.info(
        "clicks job: strategy=%s mode=%s tail=%s kafka=%s",
        settings.join_strategy.value,
        settings.join_mode.value,
        settings.kafka_tail,
        kafka.redacted(),
    )
    return build_flow(settings, kafka)


def check_kafka_config(kafka: KafkaConnection) -> None:
    """Reject unknown or invalid librdkafka properties before the dataflow starts."""
    from confluent_kafka import KafkaException, Producer

    try:
        Producer(kafka.to_librdkafka())
    except KafkaException as exc:
        # librdkafka names the bad property; map it back to the variable.
        text = str(exc.args[0].str() if exc.args else exc)
        for secret in kafka.secrets.values():
            value = secret.get_secret_value()
            if value:
                text = text.replace(value, "**********")
        raise ConfigError(f"invalid configuration:\n  KAFKA_* librdkafka property: {text}") from None


def __getattr__(name: str):
    # `python -m bytewax.run dataflows.clicks` looks up `flow`: build it then,
    # so importing this module (tests, tools) reads no environment.
    if name == "flow":
        return flow_from_env()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
