"""Late-click messages: the original click, and the window it missed.

A windowed job sends a click whose window had already closed to
``LATE_TOPIC``: the original value bytes and key, with these headers (all
values UTF-8; times ISO-8601 UTC with milliseconds):

=====================  =======================================================
``late.window_start``  start of the (first) window the click missed
``late.window_end``    its end (exclusive)
``late.watermark``     the clicks watermark when the click arrived
``late.event_time``    the click's event time
``late.topic``         source topic
``late.partition``     source partition
``late.offset``        source offset
=====================  =======================================================

Lineage id (see :mod:`connectors.exactly_once_sink`):
``late:<topic>/<partition>/<offset>`` of the source click.
"""

from __future__ import annotations

from operators.event_parsing import format_event_time
from operators.records import LateClick, OutMessage


def late_click_message(late: LateClick, topic: str) -> OutMessage:
    """The original click (bytes and key) with headers naming the window it missed."""
    click = late.click
    headers = [
        ("late.window_start", format_event_time(late.window_start_ms).encode()),
        ("late.window_end", format_event_time(late.window_end_ms).encode()),
        ("late.watermark", format_event_time(late.watermark_ms).encode()),
        ("late.event_time", format_event_time(click.ts_ms).encode()),
        ("late.topic", click.topic.encode()),
        ("late.partition", str(click.partition).encode()),
        ("late.offset", str(click.offset).encode()),
    ]
    lineage = f"late:{click.topic}/{click.partition}/{click.offset}".encode()
    return OutMessage(topic, click.message_key, click.value, headers, lineage)
