"""The top users job: global top-N users by clicks per event-time tumbling window.

``python -m bytewax.run dataflows.top_users``. Output to ``TOP_USERS_TOPIC``,
key = window start (ISO-8601 UTC), value::

    {"window_start": "2026-01-01T00:00:00.000+00:00",
     "window_end": "2026-01-01T00:30:00.000+00:00",
     "top": [{"user_id": "u1", "clicks": 42}, ...]}

Clicks whose window had already closed go to ``LATE_TOPIC``; bad records to
``DLQ_TOPIC``. See :mod:`operators.top_users`.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
from bytewax.dataflow import Dataflow

from clickstream.settings import KafkaConnection, TopUsersSettings
from dataflows.common import clicks_input, lazy_flow, settings_from_env, write_windowed_outputs
from operators.event_parsing import format_event_time
from operators.records import OutMessage
from operators.top_users import WindowTop, top_users


def window_message(window: WindowTop, topic: str) -> OutMessage:
    start = format_event_time(window.window_start_ms)
    value = {
        "window_start": start,
        "window_end": format_event_time(window.window_end_ms),
        "top": [{"user_id": user, "clicks": clicks} for user, clicks in window.top],
    }
    return OutMessage(topic, start.encode(), orjson.dumps(value), None, b"top:" + start.encode())


def build_flow(settings: TopUsersSettings, kafka: KafkaConnection) -> Dataflow:
    config = kafka.to_librdkafka()
    flow = Dataflow("top_users")
    clicks = clicks_input(flow, settings, config)
    tops = top_users(
        "top_users",
        clicks.oks,
        window=timedelta(seconds=settings.window_seconds),
        lateness=timedelta(seconds=settings.allowed_lateness_seconds),
        top_n=settings.top_n,
        shards=settings.state_shards,
    )
    topic = settings.top_users_topic
    write_windowed_outputs(
        config, settings, clicks, tops.windows, tops.late, lambda w: window_message(w, topic),
        topic,
    )
    return flow


def flow_from_env() -> Dataflow:
    settings, kafka = settings_from_env(TopUsersSettings, "top_users")
    return build_flow(settings, kafka)


__getattr__ = lazy_flow(flow_from_env)
