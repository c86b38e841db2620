"""The user sessions job: per-user event-time session windows, state freed on close.

``python -m bytewax.run dataflows.sessions``. Output to ``SESSIONS_TOPIC``,
key = user id (UTF-8), value::

    {"user_id": "u1",
     "start": "2026-01-01T00:00:00.000+00:00",
     "end": "2026-01-01T00:12:30.000+00:00",
     "clicks": 7}

``start`` and ``end`` are the first and last click's event time. Clicks whose
session had already closed go to ``LATE_TOPIC``; bad records to
``DLQ_TOPIC``. See :mod:`operators.user_sessions` for the semantics.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
from bytewax.dataflow import Dataflow

from clickstream.settings import KafkaConnection, SessionsSettings
from dataflows.common import clicks_input, lazy_flow, settings_from_env, write_windowed_outputs
from operators.event_parsing import format_event_time
from operators.records import OutMessage
from operators.user_sessions import Session, user_sessions


def session_message(session: Session, topic: str) -> OutMessage:
    value = {
        "user_id": session.key,
        "start": format_event_time(session.start_ms),
        "end": format_event_time(session.end_ms),
        "clicks": session.clicks,
    }
    lineage = f"session:{session.key}:{session.start_ms}".encode()
    return OutMessage(topic, session.key.encode(), orjson.dumps(value), None, lineage)


def build_flow(settings: SessionsSettings, kafka: KafkaConnection) -> Dataflow:
    config = kafka.to_librdkafka()
    flow = Dataflow("sessions")
    clicks = clicks_input(flow, settings, config)
    out = user_sessions(
        "user_sessions",
        clicks.oks,
        gap=timedelta(seconds=settings.session_gap_seconds),
        lateness=timedelta(seconds=settings.allowed_lateness_seconds),
        shards=settings.state_shards,
    )
    topic = settings.sessions_topic
    write_windowed_outputs(
        config, settings, clicks, out.sessions, out.late, lambda s: session_message(s, topic),
        topic,
    )
    return flow


def flow_from_env() -> Dataflow:
    settings, kafka = settings_from_env(SessionsSettings, "sessions")
    return build_flow(settings, kafka)


__getattr__ = lazy_flow(flow_from_env)
