"""The user sessions job: per-user event-time session windows, state freed on close.

``python -m bytewax.run dataflows.sessions``. Output to ``SESSIONS_TOPIC``,
key = user id (UTF-8), value::

    {"user_id": "u1",
     "start": "2026-01-01T00:00:00.000+00:00",
     "end": "2026-01-01T00:12:30.000+00:00",
     "clicks": 7}

``start`` and ``end`` are the first and last click's event time. Clicks whose
session had already closed go to ``LATE_TOPIC``; bad records to
``DLQ_TOPIC``. See :mod:`operators.user_sessions` for the semantics; the flow
around it is :class:`dataflows._windowed.WindowedJob`'s.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
from bytewax.dataflow import Stream

from dataflows._windowed import WindowedJob, WindowedStreams
from dataflows.common import lazy_flow
from dataflows.settings import SessionsSettings
from operators.event_parsing import format_event_time
from operators.records import DecodedBatch, OutMessage
from operators.user_sessions import Session, user_sessions


def windows(settings: SessionsSettings, clicks: Stream[DecodedBatch]) -> WindowedStreams:
    out = user_sessions(
        "user_sessions",
        clicks,
        gap=timedelta(seconds=settings.session_gap_seconds),
        lateness=timedelta(seconds=settings.allowed_lateness_seconds),
        shards=settings.state_shards,
    )
    return out.sessions, out.late


def session_message(session: Session, topic: str) -> OutMessage:
    value = {
        "user_id": session.key,
        "start": format_event_time(session.start_ms),
        "end": format_event_time(session.end_ms),
        "clicks": session.clicks,
    }
    lineage = f"session:{session.key}:{session.start_ms}".encode()
    return OutMessage(topic, session.key.encode(), orjson.dumps(value), None, lineage)


JOB = WindowedJob(
    "sessions",
    SessionsSettings,
    windows,
    session_message,
    results_topic=lambda settings: settings.sessions_topic,
)
build_flow, flow_from_env = JOB.build_flow, JOB.flow_from_env
#: The settings this job reads (the launcher records the ones that shape state).
SETTINGS = JOB.settings
__getattr__ = lazy_flow(flow_from_env)
