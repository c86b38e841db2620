"""Click and profile builders with per-partition offsets, for the strategy tests."""

from __future__ import annotations

from operators.records import Click, ProfileVersion

CLICKS_TOPIC = "clicks"
PROFILES_TOPIC = "profiles"

_click_offsets: dict = {}
_profile_offsets: dict = {}


def click(user: str, ts_ms: int, partition: int = 0) -> Click:
    """A click with the next offset of its partition."""
    offset = _click_offsets.get(partition, 0)
    _click_offsets[partition] = offset + 1
    value = f'{{"user_id":"{user}","n":{offset}}}'.encode()
    return Click(user, ts_ms, value, CLICKS_TOPIC, partition, offset)


def profile(user: str, ts_ms: int, version: str, partition: int = 0) -> ProfileVersion:
    """A profile version with the next offset of its partition."""
    offset = _profile_offsets.get(partition, 0)
    _profile_offsets[partition] = offset + 1
    value = f'{{"user_id":"{user}","v":"{version}"}}'.encode()
    return ProfileVersion(user, ts_ms, value, PROFILES_TOPIC, partition, offset)


def is_click(event) -> bool:
    """Clicks and profile versions are both events: tell them apart by topic."""
    return event.topic == CLICKS_TOPIC
