"""The top users job: global top-N users by clicks per event-time tumbling window.

``python -m bytewax.run dataflows.top_users``. Output to ``TOP_USERS_TOPIC``,
key = window start (ISO-8601 UTC), value::

    {"window_start": "2026-01-01T00:00:00.000+00:00",
     "window_end": "2026-01-01T00:30:00.000+00:00",
     "top": [{"user_id": "u1", "clicks": 42}, ...]}

Clicks whose window had already closed go to ``LATE_TOPIC``; bad records to
``DLQ_TOPIC``. See :mod:`operators.top_users`; the flow around it is
:class:`dataflows._windowed.WindowedJob`'s.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
from bytewax.dataflow import Stream

from dataflows._windowed import WindowedJob, WindowedStreams
from dataflows.common import lazy_flow
from dataflows.settings import TopUsersSettings
from operators.event_parsing import format_event_time
from operators.records import DecodedBatch, OutMessage
from operators.top_users import WindowTop, top_users


def windows(settings: TopUsersSettings, clicks: Stream[DecodedBatch]) -> WindowedStreams:
    tops = top_users(
        "top_users",
        clicks,
        window=timedelta(seconds=settings.window_seconds),
        lateness=timedelta(seconds=settings.allowed_lateness_seconds),
        top_n=settings.top_n,
        shards=settings.state_shards,
    )
    return tops.windows, tops.late


def window_message(window: WindowTop, topic: str) -> OutMessage:
    start = format_event_time(window.window_start_ms)
    value = {
        "window_start": start,
        "window_end": format_event_time(window.window_end_ms),
        "top": [{"user_id": user, "clicks": clicks} for user, clicks in window.top],
    }
    return OutMessage(topic, start.encode(), orjson.dumps(value), None, b"top:" + start.encode())


JOB = WindowedJob(
    "top_users",
    TopUsersSettings,
    windows,
    window_message,
    results_topic=lambda settings: settings.top_users_topic,
)
build_flow, flow_from_env = JOB.build_flow, JOB.flow_from_env
#: The settings this job reads (the launcher records the ones that shape state).
SETTINGS = JOB.settings
__getattr__ = lazy_flow(flow_from_env)
