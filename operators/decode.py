"""``decode``: turn raw source batches into valid records and dead letters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from operators.event_parsing import TOO_LARGE
from operators.metrics import DEAD_LETTERED, RECORDS_IN
from operators.record_mapping import Parser, RecordMapping, make_parser
from operators.records import DeadLetter, Decoded, DecodedBatch, SourceBatch


@dataclass(frozen=True)
class DecodeOut:
    """Valid records (still batched, with the source position) and dead letters."""

    oks: Stream[DecodedBatch]
    errs: Stream[list[DeadLetter]]


#: Default largest record value accepted (bytes); larger ones are dead-lettered.
DEFAULT_MAX_RECORD_BYTES = 1_000_000


def decode_batch(
    batch: SourceBatch,
    parse: Parser,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    stage: str = "decode",
) -> tuple[DecodedBatch, list[DeadLetter]]:
    """Parse every record of a batch; nothing is dropped: each is ok or dead."""
    oks: list[Decoded] = []
    dead: list[DeadLetter] = []
    max_ts = None
    topic = batch.topic
    now_ms = batch.polled_at_ms
    if batch.records:
        RECORDS_IN.labels(topic).inc(len(batch.records))
    for record in batch.records:
        value = record.value
        if value is not None and len(value) > max_record_bytes:
            dead.append(
                DeadLetter(
                    record,
                    topic,
                    TOO_LARGE,
                    f"value is {len(value)} bytes, over the {max_record_bytes}-byte limit",
                    stage,
                )
            )
            continue
        parsed = parse(record, topic, now_ms)
        if type(parsed) is DeadLetter:
            dead.append(parsed)
        else:
            oks.append(parsed)
            if max_ts is None or parsed.ts_ms > max_ts:
                max_ts = parsed.ts_ms
    if dead:
        for reason, count in Counter(d.reason for d in dead).items():
            DEAD_LETTERED.labels(topic, reason).inc(count)
    decoded = DecodedBatch(
        topic,
        batch.partition,
        batch.partition_count,
        oks,
        max_ts,
        batch.status,
        batch.polled_at_ms,
    )
    return decoded, dead


@operator
def decode(
    step_id: str,
    up: Stream[SourceBatch],
    mapping: RecordMapping,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> DecodeOut:
    """Validate each record of each batch with the parser of ``mapping``.

    Every batch comes out on ``oks`` (even when all its records were bad, so
    the source's position still reaches downstream); each non-empty list of
    rejected records comes out on ``errs``.
    """
    parse = make_parser(mapping)
    stage = mapping.stage
    both = op.map("parse", up, lambda batch: decode_batch(batch, parse, max_record_bytes, stage))
    oks = op.map("oks", both, lambda pair: pair[0])
    errs = op.filter_map("errs", both, lambda pair: pair[1] or None)
    return DecodeOut(oks, errs)
