"""The record-mapping settings: defaults are today's contract, every variable
is read, and a bad or contradictory value stops start-up with one line that
names the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT
from dataflows.settings import ClicksSettings, ConfigError, TopUsersSettings, load_settings
from operators.record_mapping import DEFAULT_CLICKS, DEFAULT_PROFILES, RecordMapping


def test_the_default_mappings_are_the_original_record_contract():
    settings, _ = load_settings(ClicksSettings, {})
    assert (
        settings.clicks_mapping()
        == DEFAULT_CLICKS
        == RecordMapping("clicks", "user_id", "ts", "timestamp", "auto", "reject", 10**12, None)
    )
    assert settings.profiles_mapping() == DEFAULT_PROFILES
    assert (settings.output_shape.value, settings.flat_profile_prefix, settings.flat_collision.value) == (
        "nested",
        "profile_",
        "keep_click",
    )


def test_every_mapping_variable_is_read():
    settings, _ = load_settings(
        ClicksSettings,
        {
            "CLICKS_KEY": "user.id",
            "CLICKS_TIME": "meta.event_time",
            "CLICKS_TIME_FALLBACK": "none",
            "CLICKS_TIME_FORMAT": "epoch_s",
            "PROFILES_KEY": "@key",
            "PROFILES_TIME": "modified",
            "PROFILES_TIME_FALLBACK": "none",
            "PROFILES_TIME_FORMAT": "iso8601",
            "ISO_WITHOUT_OFFSET": "utc",
            "EVENT_TIME_MIN": "2020-01-01T00:00:00+00:00",
            "OUTPUT_SHAPE": "flat",
            "FLAT_PROFILE_PREFIX": "",
            "FLAT_COLLISION": "dead_letter",
            "PROFILE_FIELDS": "tier, city",
        },
    )
    assert settings.clicks_mapping() == RecordMapping(
        "clicks", "user.id", "meta.event_time", "none", "epoch_s", "utc", 1_577_836_800_000
    )
    assert settings.profiles_mapping() == RecordMapping(
        "profiles", "@key", "modified", "none", "iso8601", "utc", 1_577_836_800_000, ("tier", "city")
    )
    assert (settings.output_shape.value, settings.flat_profile_prefix, settings.flat_collision.value) == (
        "flat",
        "",
        "dead_letter",
    )
    # the windowed jobs read the clicks mapping too
    top, _ = load_settings(TopUsersSettings, {"CLICKS_KEY": "@key", "EVENT_TIME_MIN": "0"})
    assert (top.clicks_mapping().key, top.clicks_mapping().event_time_min_ms) == ("@key", 0)


@pytest.mark.parametrize(
    "env,line",
    [
        ({"CLICKS_KEY": ""}, "CLICKS_KEY: '' is not a dotted field path (empty part) (got '')"),
        (
            {"PROFILES_KEY": "customer..id"},
            "PROFILES_KEY: 'customer..id' is not a dotted field path (empty part) (got 'customer..id')",
        ),
        (
            {"CLICKS_TIME": "meta."},
            "CLICKS_TIME: 'meta.' is not a dotted field path (empty part) (got 'meta.')",
        ),
        (
            {"CLICKS_KEY": "@timestamp"},
            "CLICKS_KEY: @timestamp is a time, not a key (use a field path or @key) (got '@timestamp')",
        ),
        (
            {"PROFILES_TIME": "@key"},
            "PROFILES_TIME: @key is a key, not a time (use a field path or @timestamp) (got '@key')",
        ),
        (
            {"CLICKS_KEY": "@partition"},
            "CLICKS_KEY: '@partition': the only message part a key can be is @key (got '@partition')",
        ),
        (
            {"CLICKS_TIME_FORMAT": "seconds"},
            "CLICKS_TIME_FORMAT: Input should be 'auto', 'epoch_ms', 'epoch_s', 'epoch_us', 'epoch_ns' "
            "or 'iso8601' (got 'seconds')",
        ),
        (
            {"CLICKS_TIME_FALLBACK": "wallclock"},
            "CLICKS_TIME_FALLBACK: Input should be 'timestamp' or 'none' (got 'wallclock')",
        ),
        (
            {"ISO_WITHOUT_OFFSET": "local"},
            "ISO_WITHOUT_OFFSET: Input should be 'reject' or 'utc' (got 'local')",
        ),
        (
            {"EVENT_TIME_MIN": "last year"},
            "EVENT_TIME_MIN: must be an ISO-8601 time with an offset or epoch ms: "
            "EVENT_TIME_MIN 'last year' is not ISO-8601 (got 'last year')",
        ),
        (
            {"EVENT_TIME_MIN": "2001-01-01T00:00:00"},
            "EVENT_TIME_MIN: must be an ISO-8601 time with an offset or epoch ms: EVENT_TIME_MIN "
            "'2001-01-01T00:00:00' has no UTC offset (set ISO_WITHOUT_OFFSET=utc to read it as UTC) "
            "(got '2001-01-01T00:00:00')",
        ),
        ({"EVENT_TIME_MIN": "-5"}, "EVENT_TIME_MIN: must not be before 1970-01-01T00:00:00Z (got '-5')"),
        (
            {"EVENT_TIME_MIN": "2999-01-01T00:00:00Z"},
            "EVENT_TIME_MIN: is in the future: every event would be refused (got '2999-01-01T00:00:00Z')",
        ),
        ({"OUTPUT_SHAPE": "wide"}, "OUTPUT_SHAPE: Input should be 'nested' or 'flat' (got 'wide')"),
        (
            {"OUTPUT_SHAPE": "flat", "FLAT_COLLISION": "merge"},
            "FLAT_COLLISION: Input should be 'keep_click', 'keep_profile' or 'dead_letter' (got 'merge')",
        ),
        (
            {"PROFILE_FIELDS": " , "},
            "PROFILE_FIELDS: lists no field (unset it to keep every field) (got ' , ')",
        ),
        ({"PROFILE_FIELDS": "tier,,city"}, "PROFILE_FIELDS: has an empty field name (got 'tier,,city')"),
        # contradictions
        (
            {"CLICKS_TIME": "@timestamp", "CLICKS_TIME_FORMAT": "epoch_s"},
            "CLICKS_TIME_FORMAT: epoch_s contradicts CLICKS_TIME=@timestamp "
            "(the Kafka message timestamp is always epoch milliseconds)",
        ),
        (
            {"PROFILES_TIME": "@timestamp", "PROFILES_TIME_FORMAT": "iso8601"},
            "PROFILES_TIME_FORMAT: iso8601 contradicts PROFILES_TIME=@timestamp "
            "(the Kafka message timestamp is always epoch milliseconds)",
        ),
        (
            {"FLAT_PROFILE_PREFIX": "p_"},
            "FLAT_PROFILE_PREFIX: only applies with OUTPUT_SHAPE=flat (OUTPUT_SHAPE is nested)",
        ),
        (
            {"OUTPUT_SHAPE": "nested", "FLAT_COLLISION": "keep_profile"},
            "FLAT_COLLISION: only applies with OUTPUT_SHAPE=flat (OUTPUT_SHAPE is nested)",
        ),
    ],
)
def test_a_bad_mapping_value_is_one_line_naming_the_variable(env, line):
    with pytest.raises(ConfigError) as err:
        load_settings(ClicksSettings, env)
    assert err.value.message == f"invalid configuration:\n  {line}"


def test_a_mapping_given_to_load_settings_is_the_whole_environment(monkeypatch):
    monkeypatch.setenv("JOIN_MODE", "inner")
    monkeypatch.setenv("CLICKS_KEY", "@key")
    settings, _ = load_settings(ClicksSettings, {})
    assert (settings.join_mode.value, settings.clicks_key) == ("left", "user_id")
    settings, _ = load_settings(ClicksSettings)  # None: the process environment
    assert (settings.join_mode.value, settings.clicks_key) == ("inner", "@key")


def test_the_job_refuses_a_bad_mapping_at_start_up():
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "CLICKS_TIME_FORMAT": "epoch_sec"}
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.top_users"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "CLICKS_TIME_FORMAT: Input should be 'auto', 'epoch_ms', 'epoch_s'" in proc.stderr
    assert "Traceback" not in proc.stderr
