"""Configuration contract (variable names, defaults, errors, secrets) and output encoding."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from conftest import ROOT
from dataflows.settings import (
    ClicksSettings,
    ConfigError,
    JoinMode,
    JoinStrategy,
    KafkaConnection,
    load_settings,
)
from operators.join_output import encode_results
from operators.records import JoinResult, OutMessage
from story import T0, click, profile


def test_defaults_match_the_documented_contract():
    settings, kafka = load_settings(ClicksSettings, {})
    assert kafka.bootstrap_servers == "localhost:9092"
    assert (
        settings.clicks_topic,
        settings.profiles_topic,
        settings.joined_topic,
        settings.unmatched_topic,
        settings.dlq_topic,
    ) == ("user_clicks", "user_profiles", "joined_data", "unmatched_clicks", "dead_letters")
    assert settings.join_mode == JoinMode.LEFT
    assert settings.join_strategy == JoinStrategy.ASOF
    assert settings.kafka_tail is True
    assert settings.profile_ttl_seconds == 7 * 24 * 3600
    assert settings.profile_wait_seconds == 10


def test_every_variable_is_read():
    settings, kafka = load_settings(
        ClicksSettings,
        {
            "KAFKA_BOOTSTRAP_SERVERS": "b1:9092, b2:9093",
            "CLICKS_TOPIC": "c",
            "PROFILES_TOPIC": "p",
            "JOINED_TOPIC": "j",
            "UNMATCHED_TOPIC": "u",
            "DLQ_TOPIC": "d",
            "JOIN_MODE": "inner",
            "JOIN_STRATEGY": "window",
            "PROFILE_TTL_SECONDS": "60",
            "PROFILE_WAIT_SECONDS": "0.5",
            "KAFKA_TAIL": "false",
        },
    )
    assert kafka.bootstrap_servers == "b1:9092,b2:9093"
    assert (settings.clicks_topic, settings.profiles_topic, settings.joined_topic) == ("c", "p", "j")
    assert (settings.unmatched_topic, settings.dlq_topic) == ("u", "d")
    assert settings.join_mode == JoinMode.INNER
    assert settings.join_strategy == JoinStrategy.WINDOW
    assert (settings.profile_ttl_seconds, settings.profile_wait_seconds) == (60, 0.5)
    assert settings.kafka_tail is False


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"JOIN_MODE": "outer"}, "JOIN_MODE: Input should be 'left' or 'inner' (got 'outer')"),
        ({"PROFILE_TTL_SECONDS": "-5"}, "PROFILE_TTL_SECONDS: Input should be greater than 0"),
        ({"PROFILE_WAIT_SECONDS": "soon"}, "PROFILE_WAIT_SECONDS: Input should be a valid number"),
        ({"KAFKA_TAIL": "maybe"}, "KAFKA_TAIL: Input should be a valid boolean"),
        ({"CLICKS_TOPIC": ""}, "CLICKS_TOPIC: String should have at least 1 character"),
        (
            {"KAFKA_BOOTSTRAP_SERVERS": "nohostport"},
            "KAFKA_BOOTSTRAP_SERVERS: Value error, 'nohostport' is not host:port",
        ),
    ],
)
def test_a_bad_value_names_its_variable(env, expected):
    with pytest.raises(ConfigError) as info:
        load_settings(ClicksSettings, env)
    assert expected in str(info.value)


def test_librdkafka_properties_round_trip_and_secrets_stay_hidden():
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "broker:9092",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "svc",
        "KAFKA_SASL_PASSWORD": "hunter2",
        "KAFKA_SSL_KEY_PASSWORD": "pem-secret",
        "KAFKA_SSL_KEY_LOCATION": "/etc/key.pem",
        "KAFKA_TAIL": "false",  # ours, not librdkafka's
    }
    kafka = KafkaConnection.from_env(env)
    expected = {
        "bootstrap.servers": "broker:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "svc",
        "sasl.password": "hunter2",
        "ssl.key.password": "pem-secret",
        "ssl.key.location": "/etc/key.pem",
    }
    assert kafka.to_librdkafka() == expected
    assert KafkaConnection.from_librdkafka(expected) == kafka
    for shown in (repr(kafka), str(kafka), str(kafka.redacted()), kafka.model_dump_json()):
        assert "hunter2" not in shown and "pem-secret" not in shown
    assert kafka.redacted()["sasl.password"] == "**********"
    assert kafka.redacted()["ssl.key.location"] == "/etc/key.pem"


def test_the_job_exits_with_one_clear_message_on_bad_config():
    """`python -m bytewax.run dataflows.clicks` with a bad variable: no traceback,
    one message naming it, non-zero exit, and no secret in the output."""
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.clicks"],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "JOIN_MODE": "sideways",
            "KAFKA_SASL_PASSWORD": "hunter2",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "JOIN_MODE: Input should be 'left' or 'inner' (got 'sideways')" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout


def test_unknown_librdkafka_property_is_rejected_at_start():
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.clicks"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "KAFKA_NO_SUCH_THING": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert 'No such configuration property: "no.such.thing"' in proc.stderr
    assert "Traceback" not in proc.stderr


def test_left_mode_sends_every_click_to_joined_inner_mode_splits():
    matched = JoinResult(click("ann", 10, "c1"), profile("ann", 0, "pro"))
    unmatched = JoinResult(click("zed", 10, "c2"), None)

    left = encode_results([matched, unmatched], "joined", None)
    assert [(m.topic, m.key) for m in left] == [("joined", b"ann"), ("joined", b"zed")]

    inner = encode_results([matched, unmatched], "joined", "unmatched")
    assert [(m.topic, m.key) for m in inner] == [("joined", b"ann"), ("unmatched", b"zed")]

    assert orjson.loads(inner[0].value) == {
        "user_id": "ann",
        "click": {"user_id": "ann", "ts": T0 + 10_000, "name": "c1"},
        "profile": {"user_id": "ann", "updated_at": T0, "tier": "pro"},
        "click_ts": T0 + 10_000,
        "profile_ts": T0,
        "source": {"topic": "user_clicks", "partition": 0, "offset": matched.click.offset},
    }
    assert orjson.loads(inner[1].value)["profile"] is None
    assert orjson.loads(inner[1].value)["profile_ts"] is None
    assert isinstance(inner[0], OutMessage)
