"""The clicks enrichment job: ``user_clicks`` joined with ``user_profiles`` by the
mapped key (``CLICKS_KEY`` / ``PROFILES_KEY``, default ``user_id``).

Run it with ``python -m bytewax.run dataflows.clicks`` (add ``-w N`` for
threads, ``-i/-a`` for processes). Configuration comes from environment
variables (see ``dataflows.settings.ClicksSettings`` and the README).

::

    user_clicks ──> decode ──oks──> route ─┐                 ┌─> joined_data
                      └─errs─┐             ├─> asof_join ────┤   (unmatched_clicks
    user_profiles ─> decode ─┼─oks──> route ─┘  (shards)      │    in inner mode)
                      └─errs─┴──────────────────> dead_letters
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from dataflows.common import (
    clicks_input,
    job_settings,
    kafka_input,
    late_messages,
    lazy_flow,
    output_layout,
    write_outputs,
)
from dataflows.runtime import start_job_runtime
from dataflows.settings import (
    ClicksSettings,
    JoinMode,
    JoinStrategy,
    KafkaConnection,
    OutputShape,
)
from operators.asof_join import asof_join
from operators.interval_join import interval_join
from operators.join_output import FlatShape, encode_routed
from operators.records import DecodedBatch, JoinResult, LateClick

log = logging.getLogger("dataflows.clicks")

#: How often an idle, caught-up profiles partition reports its position to
#: every join shard: a live click waits for the profiles watermark to pass its
#: event time, so this bounds that wait (measured in ``bench.latency``).
LIVE_PROFILES_PROGRESS = timedelta(milliseconds=20)


def _items(batch: DecodedBatch) -> list:
    return batch.items


def _join(
    settings: ClicksSettings, clicks: Stream[DecodedBatch], profiles: Stream[DecodedBatch]
) -> tuple[Stream[list[JoinResult]], Stream[list[LateClick]] | None]:
    """Join with the configured strategy: (results, late clicks and versions or None)."""
    if settings.join_strategy == JoinStrategy.INTERVAL:
        out = interval_join(
            "interval_join",
            clicks,
            profiles,
            before=timedelta(seconds=settings.interval_before_seconds),
            after=timedelta(seconds=settings.interval_after_seconds),
            lateness=timedelta(seconds=settings.allowed_lateness_seconds),
            wait=timedelta(seconds=settings.profile_wait_seconds),
            # unmatched clicks come out in both modes: inner mode sends them
            # to UNMATCHED_TOPIC (see encode_routed)
            how="left",
            shards=settings.state_shards,
            live_interval=LIVE_PROFILES_PROGRESS,
        )
        return out.joined, out.late
    return _one_per_click(settings, clicks, profiles), None


def _one_per_click(
    settings: ClicksSettings, clicks: Stream[DecodedBatch], profiles: Stream[DecodedBatch]
) -> Stream[list[JoinResult]]:
    """The strategies where every valid click yields exactly one result."""
    if settings.join_strategy == JoinStrategy.ASOF:
        return asof_join(
            "asof_join",
            clicks,
            profiles,
            ttl=timedelta(seconds=settings.profile_ttl_seconds),
            wait=timedelta(seconds=settings.profile_wait_seconds),
            lateness=timedelta(seconds=settings.allowed_lateness_seconds),
            shards=settings.state_shards,
            live_profiles_interval=LIVE_PROFILES_PROGRESS,
        ).joined
    if settings.join_strategy == JoinStrategy.WINDOW:
        from operators.window_join import window_join

        return window_join(
            "window_join",
            op.map("click_lists", clicks, _items),
            op.map("profile_lists", profiles, _items),
            window_length=timedelta(seconds=settings.window_seconds),
            wait_for_system_duration=timedelta(seconds=settings.allowed_lateness_seconds),
            align_to=datetime(1970, 1, 1, tzinfo=UTC),
            shards=settings.state_shards,
        ).joined
    click_items = op.flat_map("click_items", clicks, _items)
    profile_items = op.flat_map("profile_items", profiles, _items)
    from operators.running_join import running_join

    results = running_join("running_join", click_items, profile_items)
    return op.map("as_lists", results, lambda result: [result])


def build_flow(settings: ClicksSettings, kafka: KafkaConnection) -> Dataflow:
    """The clicks dataflow for the given settings."""
    config = kafka.to_librdkafka()
    flow = Dataflow("clicks")
    clicks = clicks_input(flow, settings, config)
    profiles = kafka_input(
        flow,
        "profiles",
        settings.profiles_topic,
        settings.profiles_mapping(),
        settings,
        config,
        heartbeat=LIVE_PROFILES_PROGRESS,
    )

    results, late = _join(settings, clicks.oks, profiles.oks)
    unmatched_topic = settings.unmatched_topic if settings.join_mode == JoinMode.INNER else None
    joined_topic = settings.joined_topic
    dlq_topic = settings.dlq_topic
    flat = (
        FlatShape(settings.flat_profile_prefix, settings.flat_collision.value)
        if settings.output_shape == OutputShape.FLAT
        else None
    )
    pairs = late is not None  # one record per (click, version): lineage per pair
    topics = [joined_topic] + ([unmatched_topic] if unmatched_topic else [])
    outputs = []
    if late is not None:
        late_topic = settings.late_topic
        outputs.append(late_messages("encode_late", late, "clicks", late_topic))
        topics.append(late_topic)
    layout = output_layout(config, dlq_topic, topics)
    # Encoded and routed to their sink partitions in one pass, every result
    # list of an activation together.
    encoded = op.flat_map_batch(
        "encode",
        results,
        lambda lists: encode_routed(
            lists, joined_topic, unmatched_topic, flat, dlq_topic, pairs, layout.slot_range
        ),
    )
    write_outputs("out", config, dlq_topic, [clicks.errs, profiles.errs], outputs, topics, encoded, layout)
    return flow


def flow_from_env() -> Dataflow:
    """Build the dataflow from environment variables; exits with a clear message if bad."""
    settings, kafka = job_settings(ClicksSettings)
    start_job_runtime("clicks", settings, kafka)
    log.info(
        "strategy=%s mode=%s output=%s profiles=%s",
        settings.join_strategy.value,
        settings.join_mode.value,
        settings.output_shape.value,
        settings.profiles_mapping(),
    )
    return build_flow(settings, kafka)


#: The settings this job reads (the launcher records the ones that shape state).
SETTINGS = ClicksSettings
__getattr__ = lazy_flow(flow_from_env)
