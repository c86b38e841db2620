"""What a recovery store was written with: the settings that shape a job's
state and output layout, kept next to the store as ``layout.json``.

A Bytewax recovery store holds state per shard key and offsets per input and
output partition. Resuming it with another ``STATE_SHARDS``, join strategy or
mode, window length, record mapping, or a topic with another partition count
mixes states or applies an offset to the wrong partition, silently. So the
launcher writes the layout when it creates a store (or first meets one
without it) and, on every later start, refuses one that differs, naming each
change and how to reset.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from clickstream.jobs import job_module
from connectors.kafka_io import partition_counts

LAYOUT_FILE = "layout.json"

#: Settings that shape state or output layout, when the job has them.
SHAPING_SETTINGS = (
    "state_shards",
    "join_strategy",
    "join_mode",
    "window_seconds",
    "interval_before_seconds",
    "interval_after_seconds",
    "rate_window_seconds",
    "rate_slide_seconds",
    "session_gap_seconds",
    "top_n",
    "output_shape",
)


class LayoutChanged(Exception):
    """The store was written with other settings; the message lists them."""


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def current_layout(
    job: str, env: Mapping[str, str], recovery_partitions: int, timeout_s: float = 5.0
) -> dict[str, Any]:
    """The layout ``job`` would write with ``env``: shaping settings, record
    mappings and every topic it names with its partition count."""
    from dataflows.settings import load_settings

    settings_class = importlib.import_module(job_module(job)).SETTINGS
    settings, kafka = load_settings(settings_class, env)
    layout: dict[str, Any] = {"job": job, "recovery_partitions": recovery_partitions}
    for name in SHAPING_SETTINGS:
        if hasattr(settings, name):
            layout[name] = _plain(getattr(settings, name))
    layout["clicks_mapping"] = asdict(settings.clicks_mapping())
    if hasattr(settings, "profiles_mapping"):
        layout["profiles_mapping"] = asdict(settings.profiles_mapping())
    topics = {
        name: value
        for name, value in settings.model_dump().items()
        if name.endswith("_topic") and isinstance(value, str)
    }
    counts = partition_counts(kafka.to_librdkafka(), sorted(set(topics.values())), timeout_s)
    layout["topics"] = {name: [topic, counts.get(topic)] for name, topic in sorted(topics.items())}
    return json.loads(json.dumps(layout))  # as it reads back from the file


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per setting that differs: ``STATE_SHARDS: 16 -> 4``."""
    out = []
    for key in sorted(set(stored) | set(current)):
        before, after = stored.get(key), current.get(key)
        if key == "topics" and isinstance(before, dict) and isinstance(after, dict):
            for name in sorted(set(before) | set(after)):
                old, new = before.get(name), after.get(name)
                # a topic that does not exist (None) is one the job does not use
                if old is None or new is None or None in (old[1], new[1]):
                    continue
                if old != new:
                    out.append(f"{name.upper()} (topic, partitions): {old} -> {new}")
        elif before != after:
            out.append(f"{key.upper()}: {before} -> {after}")
    return out


def check_layout(directory: Path, current: Mapping[str, Any]) -> bool:
    """Write the layout beside a store that has none (True); return False if it
    matches; raise :class:`LayoutChanged` if it differs."""
    path = directory / LAYOUT_FILE
    if not path.exists():
        path.write_text(json.dumps(current, indent=2, sort_keys=True))
        return True
    changed = differences(json.loads(path.read_text()), current)
    if changed:
        raise LayoutChanged(
            f"the recovery store {directory} was written with other settings: "
            + "; ".join(changed)
            + ". Resuming it would mix state or misapply offsets. Restore the settings, or start "
            "over from a fresh store (delete or move RECOVERY_DIR; outputs already written stay, "
            "and a fresh run writes them again)"
        )
    return False
