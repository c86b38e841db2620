"""The one launcher, ``python -m clickstream.launch`` (behind the container's
``deploy/entrypoint.sh`` and the deprecated ``clickstream.run_job``): pod
ordinal -> process id, peer addresses, the bytewax.run command line, the
recovery variables (old names included), configuration errors, the job
registry. Pure logic; the side effects are in ``test_launch_recovery.py``.
"""

from __future__ import annotations

import re

import pytest

from clickstream import launch

JOBS = ["alerts", "clicks", "sessions", "top_users"]

# --- entrypoint logic -------------------------------------------------------------


@pytest.mark.parametrize(
    "hostname, ordinal, statefulset",
    [
        ("clicks-0", 0, "clicks"),
        ("clicks-2", 2, "clicks"),
        ("top-users-10", 10, "top-users"),
        ("clicks-1.clicks.prod.svc.cluster.local", 1, "clicks"),
        ("clicks", None, None),
        ("3f2a1b9c0d1e", None, None),  # a Docker container id
        ("clicks-5d8f7c9b6-x2x4z", None, None),  # a Deployment's pod
        ("clicks-01", None, None),  # StatefulSet ordinals have no leading zero
        ("", None, None),
    ],
)
def test_ordinal_and_statefulset_name_from_hostname(hostname, ordinal, statefulset):
    assert launch.parse_ordinal(hostname) == ordinal
    assert launch.statefulset_name(hostname) == statefulset


def test_peer_addresses_follow_the_headless_service():
    assert launch.peer_addresses("clicks", "clicks-hl", 3, 2101) == [
        "clicks-0.clicks-hl:2101",
        "clicks-1.clicks-hl:2101",
        "clicks-2.clicks-hl:2101",
    ]
    with pytest.raises(launch.LaunchError):
        launch.peer_addresses("clicks", "clicks", 0)


def plan(env: dict, argv=()) -> launch.Plan:
    return launch.plan_from_env(env, list(argv), jobs=JOBS)


def test_pod_of_a_statefulset_gets_id_addresses_and_recovery_flags():
    env = {"HOSTNAME": "clicks-2", "JOB": "clicks", "BYTEWAX_REPLICAS": "3", "RECOVERY_DIR": "/data/recovery"}
    assert plan(env).bytewax_args() == [
        "-m", "bytewax.run", "dataflows.clicks",
        "-i", "2", "-a", "clicks-0.clicks:2101;clicks-1.clicks:2101;clicks-2.clicks:2101",
        "-r", "/data/recovery", "-s", "10", "-b", "0",
    ]  # fmt: skip


def test_service_port_workers_and_intervals_are_configurable():
    env = {
        "HOSTNAME": "clicks-0", "JOB": "clicks", "BYTEWAX_REPLICAS": "2",
        "BYTEWAX_SERVICE": "clicks-peers.prod.svc.cluster.local", "BYTEWAX_PORT": "3000",
        "BYTEWAX_WORKERS_PER_PROCESS": "2", "RECOVERY_DIR": "/r",
        "RECOVERY_SNAPSHOT_SECONDS": "30", "RECOVERY_BACKUP_SECONDS": "600",
    }  # fmt: skip
    assert plan(env).bytewax_args() == [
        "-m", "bytewax.run", "dataflows.clicks",
        "-i", "0", "-a",
        "clicks-0.clicks-peers.prod.svc.cluster.local:3000;clicks-1.clicks-peers.prod.svc.cluster.local:3000",
        "-w", "2", "-r", "/r", "-s", "30", "-b", "600",
    ]  # fmt: skip


def test_explicit_addresses_and_process_id_override():
    env = {
        "HOSTNAME": "clicks-1",
        "JOB": "clicks",
        "BYTEWAX_ADDRESSES": "a:1;b:2;c:3",
        "BYTEWAX_PROCESS_ID": "2",
    }
    p = plan(env)
    assert (p.process_id, list(p.addresses)) == (2, ["a:1", "b:2", "c:3"])
    assert p.bytewax_args()[3:7] == ["-i", "2", "-a", "a:1;b:2;c:3"]
    # The hostname's ordinal is used when no id is given.
    del env["BYTEWAX_PROCESS_ID"]
    assert plan(env).process_id == 1


def test_job_from_first_argument_and_extra_arguments_pass_through():
    p = plan({"JOB": "clicks", "HOSTNAME": "x"}, ["top_users", "-w", "2"])
    assert p.bytewax_args() == ["-m", "bytewax.run", "dataflows.top_users", "-w", "2"]
    p = plan({"JOB": "sessions", "HOSTNAME": "x"}, ["-w", "3"])
    assert p.bytewax_args() == ["-m", "bytewax.run", "dataflows.sessions", "-w", "3"]


@pytest.mark.parametrize(
    "env",
    [
        {"HOSTNAME": "clicks-3", "JOB": "alerts"},  # no cluster settings: ordinal ignored
        {"HOSTNAME": "3f2a1b9c0d1e", "JOB": "alerts"},  # docker
        {"HOSTNAME": "clicks-0", "JOB": "alerts", "BYTEWAX_REPLICAS": "1"},
        {"HOSTNAME": "whatever", "JOB": "alerts", "BYTEWAX_REPLICAS": "1"},
    ],
)
def test_single_process_without_cluster(env):
    p = plan(env)
    assert not p.clustered and p.processes == 1
    assert p.bytewax_args() == ["-m", "bytewax.run", "dataflows.alerts"]


@pytest.mark.parametrize(
    "env, argv, message",
    [
        ({"HOSTNAME": "clicks-0"}, [], "no job"),
        ({"HOSTNAME": "clicks-0", "JOB": "nope"}, [], "unknown job 'nope'"),
        ({"HOSTNAME": "clicks-0", "JOB": "common"}, [], "unknown job"),
        ({"HOSTNAME": "clicks-3", "JOB": "clicks", "BYTEWAX_REPLICAS": "3"}, [], "outside 0..2"),
        ({"HOSTNAME": "abc", "JOB": "clicks", "BYTEWAX_REPLICAS": "3"}, [], "no StatefulSet ordinal"),
        ({"HOSTNAME": "abc", "JOB": "clicks", "BYTEWAX_ADDRESSES": "a:1;b:1"}, [], "set BYTEWAX_PROCESS_ID"),
        (
            {"HOSTNAME": "clicks-0", "JOB": "clicks", "BYTEWAX_REPLICAS": "two"},
            [],
            "BYTEWAX_REPLICAS must be a whole number",
        ),
        ({"HOSTNAME": "clicks-0", "JOB": "clicks", "BYTEWAX_REPLICAS": "0"}, [], "at least 1"),
        (
            {"HOSTNAME": "clicks-0", "JOB": "clicks", "BYTEWAX_REPLICAS": "2", "BYTEWAX_ADDRESSES": "a:1"},
            [],
            "BYTEWAX_REPLICAS=2 but BYTEWAX_ADDRESSES lists 1",
        ),
        (
            {
                "HOSTNAME": "x",
                "JOB": "clicks",
                "BYTEWAX_ADDRESSES": "a:1;nonsense",
                "BYTEWAX_PROCESS_ID": "0",
            },
            [],
            "not host:port",
        ),
        ({"HOSTNAME": "x", "JOB": "clicks", "BYTEWAX_PROCESS_ID": "1"}, [], "only one process"),
        (
            {"HOSTNAME": "x", "JOB": "clicks", "RECOVERY_DIR": "/r", "RECOVERY_SNAPSHOT_SECONDS": "0.5"},
            [],
            "RECOVERY_SNAPSHOT_SECONDS must be a whole number",
        ),
        ({"HOSTNAME": "x", "JOB": "clicks", "RECOVERY_SNAPSHOT_SECONDS": "0"}, [], "at least 1"),
    ],
)
def test_configuration_errors_are_explained(env, argv, message):
    with pytest.raises(launch.LaunchError, match=re.escape(message)):
        plan(env, argv)


def test_available_jobs_are_the_dataflow_modules():
    assert launch.available_jobs() == JOBS


@pytest.mark.parametrize(
    "process_id, processes, partitions, owned",
    [
        (None, 1, 1, [0]),
        (None, 1, 4, [0, 1, 2, 3]),  # a single process owns the whole store
        (0, 3, 1, [0]),
        (1, 3, 1, []),
        (2, 3, 3, [2]),
        (3, 4, 2, []),  # a process added later owns nothing
    ],
)
def test_recovery_partition_ownership(process_id, processes, partitions, owned):
    assert launch.owned_partitions(process_id, processes, partitions) == owned


def test_a_cluster_store_needs_as_many_processes_as_partitions():
    with pytest.raises(launch.LaunchError, match="RECOVERY_PARTITIONS=3 is more than the 2 processes"):
        launch.owned_partitions(0, 2, 3)


def test_job_environment_drops_variables_bytewax_run_would_read_itself():
    env = {"BYTEWAX_PROCESS_ID": "1", "BYTEWAX_ADDRESSES": "a:1;b:2", "BYTEWAX_RECOVERY_DIRECTORY": "/x",
           "KAFKA_BOOTSTRAP_SERVERS": "k:9092", "JOB": "clicks"}  # fmt: skip
    assert launch.job_environment(env) == {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "JOB": "clicks"}


def test_wait_for_dns_retries_until_the_name_resolves():
    now = [0.0]
    answers = iter([OSError("no such host"), OSError("no such host"), "10.0.0.7"])

    def resolve(host):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def sleep(s):
        now[0] += s

    assert launch.wait_for_dns("clicks-0.clicks", 10, resolve, sleep, lambda: now[0])
    assert now[0] == 1.0
    assert not launch.wait_for_dns(
        "nope", 2, lambda h: (_ for _ in ()).throw(OSError("x")), sleep, lambda: now[0]
    )


# --- one set of recovery variables; whole seconds only --------------------------------


def test_old_variable_names_still_work_for_one_release_with_a_warning():
    env = {
        "HOSTNAME": "x",
        "JOB": "clicks",
        "RECOVERY_DIR": "/r",
        "SNAPSHOT_SECONDS": "2",
        "BACKUP_SECONDS": "30",
    }
    p = plan(env)
    assert p.bytewax_args()[-6:] == ["-r", "/r", "-s", "2", "-b", "30"]
    assert p.warnings == (
        "warning: SNAPSHOT_SECONDS is deprecated: rename it RECOVERY_SNAPSHOT_SECONDS "
        "(the old name goes in the next release)",
        "warning: BACKUP_SECONDS is deprecated: rename it RECOVERY_BACKUP_SECONDS "
        "(the old name goes in the next release)",
    )
    # with both names set, the new one counts
    p = plan({**env, "RECOVERY_SNAPSHOT_SECONDS": "7"})
    assert p.bytewax_args()[-4:-2] == ["-s", "7"]
    assert (
        p.warnings[0]
        == "warning: SNAPSHOT_SECONDS is deprecated and ignored here: RECOVERY_SNAPSHOT_SECONDS is set"
    )
    assert plan({"HOSTNAME": "x", "JOB": "clicks"}).warnings == ()


@pytest.mark.parametrize(
    "name", ["RECOVERY_SNAPSHOT_SECONDS", "SNAPSHOT_SECONDS", "RECOVERY_BACKUP_SECONDS", "BACKUP_SECONDS"]
)
def test_fractional_seconds_are_refused_in_one_line_not_rounded(name):
    with pytest.raises(launch.LaunchError) as raised:
        plan({"HOSTNAME": "x", "JOB": "clicks", "RECOVERY_DIR": "/r", name: "0.5"})
    assert str(raised.value) == f"{name} must be a whole number (got '0.5'): bytewax.run takes whole seconds"


def test_bytewax_run_itself_takes_whole_seconds_only(capsys):
    """Why fractions are refused: the installed bytewax.run parses -s/-b as integers."""
    from bytewax.run import _create_arg_parser

    parser = _create_arg_parser()
    assert (
        parser.parse_args(["dataflows.clicks", "-s", "2", "-b", "0"]).snapshot_interval.total_seconds() == 2
    )
    for flag in ("-s", "-b"):
        with pytest.raises(SystemExit):
            parser.parse_args(["dataflows.clicks", flag, "0.5"])
    assert "invalid _parse_timedelta value: '0.5'" in capsys.readouterr().err


def test_a_double_dash_after_the_job_separates_bytewax_run_arguments():
    p = plan({"HOSTNAME": "x"}, ["clicks", "--", "-w", "2"])
    assert p.bytewax_args() == ["-m", "bytewax.run", "dataflows.clicks", "-w", "2"]
    assert launch.launcher_command("clicks", "-w", "2")[1:] == [
        "-m",
        "clickstream.launch",
        "clicks",
        "--",
        "-w",
        "2",
    ]
