"""What crosses between worker processes pickles compactly and comes back equal.

Bytewax pickles every item a keyed step sends to another process: the
router's shard inputs (events) and the sink's message batches. They pickle
their records as plain tuples (no Python call per record) and rebuild them.
"""

from __future__ import annotations

import pickle

from operators.progress import CLICKS, ShardInput
from operators.records import Event, JoinResult, OutBatch, OutMessage, PartitionStatus


def _events(n: int) -> list[Event]:
    return [Event(f"user-{i}", 1_000 + i, b'{"n":%d}' % i, "clicks", i % 3, i, b"k") for i in range(n)]


def test_a_shard_input_comes_back_with_events_and_pickles_smaller():
    inp = ShardInput(CLICKS, 2, 4, _events(50), 1_049, PartitionStatus.READING, 123)
    back = pickle.loads(pickle.dumps(inp))
    assert back == inp
    assert type(back) is ShardInput
    assert {type(item) for item in back.items} == {Event}
    assert type(back.status) is PartitionStatus
    default = pickle.dumps((*inp[:3], [tuple.__new__(Event, e) for e in inp.items], *inp[4:]))
    assert len(pickle.dumps(inp)) < len(default)


def test_a_shard_input_without_events_or_with_other_items_pickles_as_is():
    progress = ShardInput(CLICKS, 0, 4, [], None, PartitionStatus.FINISHED, 5)
    assert pickle.loads(pickle.dumps(progress)) == progress
    other = [JoinResult(e, None) for e in _events(3)]
    mixed = ShardInput(CLICKS, 0, 4, [*_events(2), ("not", "an", "event")], 9, PartitionStatus.READING, 5)
    for inp in (ShardInput(CLICKS, 0, 4, other, 9, PartitionStatus.READING, 5), mixed):
        back = pickle.loads(pickle.dumps(inp))
        assert back == inp
        assert [type(x) for x in back.items] == [type(x) for x in inp.items]


def test_an_out_batch_comes_back_as_messages():
    batch = OutBatch(
        OutMessage("joined", b"k%d" % i, b"v", [("h", b"x")] if i % 2 else None, b"l%d" % i)
        for i in range(20)
    )
    back = pickle.loads(pickle.dumps(("3", batch)))
    assert back == ("3", batch)
    assert type(back[1]) is OutBatch
    assert {type(m) for m in back[1]} == {OutMessage}
    assert pickle.loads(pickle.dumps(OutBatch())) == []
