"""Dead-letter messages: the original bytes, the original key, and why.

Headers added to the original ones (all values UTF-8):

=================  ===========================================================
``dlq.error``      reason code and detail, e.g. ``invalid_json: unexpected ...``
``dlq.reason``     the reason code alone (for filtering and replay)
``dlq.stage``      the step that rejected the record, e.g. ``decode_click``
``dlq.topic``      source topic
``dlq.partition``  source partition
``dlq.offset``     source offset
``dlq.timestamp``  source message timestamp in epoch ms (absent if none)
=================  ===========================================================
"""

from __future__ import annotations

from operators.records import DeadLetter, OutMessage


def dead_letter_message(dead: DeadLetter, dlq_topic: str) -> OutMessage:
    """The DLQ message for one rejected record."""
    record = dead.record
    headers = list(record.headers or ())
    headers += [
        ("dlq.error", f"{dead.reason}: {dead.detail}".encode()),
        ("dlq.reason", dead.reason.encode()),
        ("dlq.stage", dead.stage.encode()),
        ("dlq.topic", dead.topic.encode()),
        ("dlq.partition", str(record.partition).encode()),
        ("dlq.offset", str(record.offset).encode()),
    ]
    if record.timestamp_ms is not None:
        headers.append(("dlq.timestamp", str(record.timestamp_ms).encode()))
    lineage = f"dlq:{dead.topic}/{record.partition}/{record.offset}".encode()
    return OutMessage(dlq_topic, record.key, record.value, headers, lineage)


def dead_letter_messages(dead: list[DeadLetter], dlq_topic: str) -> list[OutMessage]:
    return [dead_letter_message(d, dlq_topic) for d in dead]
