"""The click-rate alerts job: users clicking more than a threshold in a sliding window.

``python -m bytewax.run dataflows.alerts``. Output to ``ALERTS_TOPIC``, key =
user id (UTF-8), value::

    {"user_id": "u00042",
     "window_start": "2026-01-01T00:00:10.000+00:00",
     "window_end": "2026-01-01T00:01:10.000+00:00",
     "clicks": 137}

one message per (user, window) whose count is above ``ALERT_THRESHOLD``.
Windows are ``RATE_WINDOW_SECONDS`` long and start every
``RATE_SLIDE_SECONDS`` (which must divide the window). Clicks that arrive
after one of their windows closed go to ``LATE_TOPIC``; bad records to
``DLQ_TOPIC``. See :mod:`operators.click_alerts`; the flow around it is
:class:`dataflows._windowed.WindowedJob`'s.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
from bytewax.dataflow import Stream

from dataflows._windowed import WindowedJob, WindowedStreams
from dataflows.common import lazy_flow
from dataflows.settings import AlertsSettings, ConfigError
from operators.click_alerts import RateAlert, SlidingWindowError, click_alerts, sliding_window_ms
from operators.event_parsing import format_event_time
from operators.records import DecodedBatch, OutMessage


def check_windows(settings: AlertsSettings) -> None:
    """The sliding-window rule (:func:`operators.click_alerts.sliding_window_ms`)
    on the settings, reported with the variables' names.

    Pydantic already guarantees both are > 0; this is the cross-field rule.
    """
    window, slide = settings.rate_window_seconds, settings.rate_slide_seconds
    try:
        sliding_window_ms(window, slide)
    except SlidingWindowError as exc:
        names = {"window": ("RATE_WINDOW_SECONDS", window), "slide": ("RATE_SLIDE_SECONDS", slide)}
        problems = [
            f"{names[field][0]}: must be a whole number of milliseconds, at least 0.001 "
            f"(got {names[field][1]:g})"
            for field in exc.not_whole
        ] or [
            "RATE_WINDOW_SECONDS: must be a whole multiple of RATE_SLIDE_SECONDS "
            f"(got {window:g} and {slide:g})"
        ]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def windows(settings: AlertsSettings, clicks: Stream[DecodedBatch]) -> WindowedStreams:
    rates = click_alerts(
        "click_alerts",
        clicks,
        window=timedelta(seconds=settings.rate_window_seconds),
        slide=timedelta(seconds=settings.rate_slide_seconds),
        threshold=settings.alert_threshold,
        lateness=timedelta(seconds=settings.allowed_lateness_seconds),
        shards=settings.state_shards,
    )
    return rates.alerts, rates.late


def alert_message(alert: RateAlert, topic: str) -> OutMessage:
    value = {
        "user_id": alert.key,
        "window_start": format_event_time(alert.window_start_ms),
        "window_end": format_event_time(alert.window_end_ms),
        "clicks": alert.clicks,
    }
    lineage = f"alert:{alert.key}:{alert.window_start_ms}".encode()
    return OutMessage(topic, alert.key.encode(), orjson.dumps(value), None, lineage)


# The window rule is checked first, before a Kafka client is built or anything logged.
JOB = WindowedJob(
    "alerts",
    AlertsSettings,
    windows,
    alert_message,
    results_topic=lambda settings: settings.alerts_topic,
    check=check_windows,
)
build_flow, flow_from_env = JOB.build_flow, JOB.flow_from_env
#: The settings this job reads (the launcher records the ones that shape state).
SETTINGS = JOB.settings
__getattr__ = lazy_flow(flow_from_env)
