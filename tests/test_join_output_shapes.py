"""The join output side by side: nested (the click and the profile embedded) and
flat (the click's fields, the profile's prefixed, lineage under ``_join``), and
what happens when a flat name collides with a click field."""

from __future__ import annotations

import tracemalloc
import zlib

import orjson
import pytest

from connectors.output_layout import OutputLayout
from operators import join_output
from operators.join_output import FlatShape, encode_result, encode_results, encode_routed
from operators.records import Event, JoinResult

CLICK = Event("42", 1000, b'{"uid":42,"page":"/home","tier":"click-tier"}', "clicks", 3, 17, b"k42")
PROFILE = Event("42", 900, b'{"tier":"gold","city":"Oslo"}', "profiles", 0, 5, b"42")
SOURCE = {"topic": "clicks", "partition": 3, "offset": 17}


def values(messages) -> list:
    return [(m.topic, m.key, orjson.loads(m.value)) for m in messages]


def test_nested_output_embeds_both_records_and_is_keyed_by_the_mapped_key():
    out = encode_results([JoinResult(CLICK, PROFILE)], "joined", None)
    assert values(out) == [
        (
            "joined",
            b"42",
            {
                "user_id": "42",
                "click": {"uid": 42, "page": "/home", "tier": "click-tier"},
                "profile": {"tier": "gold", "city": "Oslo"},
                "click_ts": 1000,
                "profile_ts": 900,
                "source": SOURCE,
            },
        )
    ]
    assert out[0].lineage == b"clicks/3/17"


def test_flat_output_lifts_the_click_prefixes_the_profile_and_keeps_lineage_aside():
    out = encode_results(
        [JoinResult(CLICK, PROFILE), JoinResult(CLICK._replace(offset=18), None)],
        "joined",
        None,
        FlatShape("p_", "keep_click"),
    )
    assert values(out) == [
        (
            "joined",
            b"42",
            {
                "uid": 42,
                "page": "/home",
                "tier": "click-tier",
                "p_tier": "gold",
                "p_city": "Oslo",
                "_join": {"click_ts": 1000, "profile_ts": 900, "source": SOURCE},
            },
        ),
        # left mode, unmatched: no profile fields at all
        (
            "joined",
            b"42",
            {
                "uid": 42,
                "page": "/home",
                "tier": "click-tier",
                "_join": {"click_ts": 1000, "profile_ts": None, "source": {**SOURCE, "offset": 18}},
            },
        ),
    ]
    # field order: the click's as received, then the profile's, then _join
    assert list(orjson.loads(out[0].value)) == ["uid", "page", "tier", "p_tier", "p_city", "_join"]


def test_inner_mode_sends_unmatched_flat_clicks_to_their_topic():
    out = encode_results([JoinResult(CLICK, None)], "joined", "unmatched", FlatShape())
    assert [(m.topic, m.key) for m in out] == [("unmatched", b"42")]


@pytest.mark.parametrize(
    "policy,tier",
    [("keep_click", "click-tier"), ("keep_profile", "gold")],
)
def test_an_empty_prefix_collides_and_the_policy_picks_the_value(policy, tier):
    out = encode_results([JoinResult(CLICK, PROFILE)], "joined", None, FlatShape("", policy))
    assert values(out) == [
        (
            "joined",
            b"42",
            {
                "uid": 42,
                "page": "/home",
                "tier": tier,
                "city": "Oslo",
                "_join": {"click_ts": 1000, "profile_ts": 900, "source": SOURCE},
            },
        )
    ]


def test_a_collision_under_dead_letter_sends_the_click_to_the_dlq_with_its_bytes():
    clean = CLICK._replace(offset=20, value=b'{"uid":42}')
    out = encode_results(
        [JoinResult(CLICK, PROFILE), JoinResult(clean, PROFILE)],
        "joined",
        None,
        FlatShape("", "dead_letter"),
        "dlq",
    )
    dead, ok = out
    assert (dead.topic, dead.key, dead.value, dead.lineage) == (
        "dlq",
        b"k42",
        CLICK.value,
        b"dlq:clicks/3/17",
    )
    assert dict(dead.headers) == {
        "dlq.error": b"field_collision: profile field 'tier' is output as 'tier', a click field",
        "dlq.reason": b"field_collision",
        "dlq.stage": b"encode_join",
        "dlq.topic": b"clicks",
        "dlq.partition": b"3",
        "dlq.offset": b"17",
    }
    assert (ok.topic, orjson.loads(ok.value)["tier"]) == ("joined", "gold")


@pytest.mark.parametrize(
    "policy,expected",
    [
        ("keep_click", {"_join": "mine"}),
        ("keep_profile", {"_join": {"click_ts": 1000, "profile_ts": None, "source": SOURCE}}),
        ("dead_letter", None),
    ],
)
def test_the_lineage_field_follows_the_collision_policy_too(policy, expected):
    click = CLICK._replace(value=b'{"_join":"mine"}')
    out = encode_results([JoinResult(click, None)], "joined", None, FlatShape("p_", policy), "dlq")
    if expected is None:
        assert [(m.topic, dict(m.headers)["dlq.error"]) for m in out] == [
            ("dlq", b"field_collision: the lineage field '_join' is a click field")
        ]
    else:
        assert values(out) == [("joined", b"42", expected)]


def _layout(counts: dict[str, int]) -> OutputLayout:
    """A layout with known partition counts (no broker asked)."""
    layout = OutputLayout({}, list(counts))
    layout._counts = dict(counts)
    first = 0
    for topic, n in counts.items():
        layout._slot_of[topic] = (first, n)
        first += n
    return layout


@pytest.mark.parametrize("shape", [None, FlatShape("p_", "dead_letter")])
@pytest.mark.parametrize("unmatched_topic", [None, "unmatched"])
@pytest.mark.parametrize("pairs", [False, True])
def test_encoding_and_routing_in_one_pass_gives_each_sink_slot_the_same_messages(
    shape, unmatched_topic, pairs
):
    """The clicks job encodes and routes in one pass (`encode_routed`); every
    slot must get exactly what encoding then the sink's own routing gives,
    in the same order: matched, unmatched and colliding clicks (to the DLQ),
    from several click partitions, in several result lists."""
    layout = _layout({"joined": 3, "unmatched": 2, "dlq": 2})
    lists = []
    for n in range(4):
        results = []
        for i in range(25):
            user = str(i % 7 + n)
            value = b'{"page":"/%d"}' % i if i % 5 else b'{"p_tier":"clash"}'
            click = Event(user, 1000 + i, value, "clicks", i % 3, 100 * n + i, None)
            profile = None if i % 4 == 0 else Event(user, 900, b'{"tier":"gold"}', "profiles", 1, i, None)
            results.append(JoinResult(click, profile))
        lists.append(results)
    dlq = "dlq"
    expected = layout.route_lists(
        [encode_results(rs, "joined", unmatched_topic, shape, dlq, pairs) for rs in lists]
    )
    got = encode_routed(lists, "joined", unmatched_topic, shape, dlq, pairs, layout.slot_range)
    assert sorted(got) == sorted(expected)
    assert sum(len(ms) for _, ms in got) == 100
    if shape is not None:
        assert {m.topic for _, ms in got for m in ms} >= {"dlq"}
        return
    # Independently of the shared encoder: each value is what the one-record
    # encoder gives, each message is in its key's slot of its topic.
    by_lineage = {
        b"clicks/%d/%d" % (r.click.partition, r.click.offset): r for results in lists for r in results
    }
    for slot, messages in got:
        for m in messages:
            result = by_lineage[m.lineage.split(b"|")[0]]
            assert m.value == encode_result(result)
            assert m.topic == ("joined" if result.profile is not None else unmatched_topic or "joined")
            first, count = {"joined": (0, 3), "unmatched": (3, 2)}[m.topic]
            assert int(slot) == first + zlib.crc32(result.click.key.encode()) % count


def test_the_user_id_cache_holds_each_id_at_its_size_and_empties_when_full(monkeypatch):
    """The encoder caches each user id's JSON and bytes; orjson's own result
    carries its whole ~4 KB buffer, so the cache keeps a copy, and it is
    emptied when full. Every message stays right across the emptying."""
    monkeypatch.setattr(join_output, "_KEY_BYTES", {})
    monkeypatch.setattr(join_output, "_KEY_BYTES_MAX", 1000)
    clicks = [Event(f"user-{i}", 1000, b"{}", "clicks", 0, i, None) for i in range(2500)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = encode_results([JoinResult(c, None) for c in clicks[:1000]], "joined", None)
        del out
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(join_output._KEY_BYTES) == 1000
    assert held / 1000 < 400  # bytes per cached id (orjson's result alone: ~4,100)
    out = encode_results([JoinResult(c, None) for c in clicks], "joined", None)
    assert len(join_output._KEY_BYTES) == 500  # emptied twice on the way
    assert [orjson.loads(m.value)["user_id"] for m in out] == [c.key for c in clicks]
    assert [m.key for m in out] == [c.key.encode() for c in clicks]
