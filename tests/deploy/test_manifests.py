"""Deployment files, validated offline: compose, Kubernetes, systemd.

* ``deploy/compose.yaml`` against the Compose Specification JSON schema
  (vendored in ``schemas/``, see ``schemas/README.md``); every file it mounts
  exists; the Prometheus container's files, laid out as mounted, pass
  ``promtool check config`` (rules included); Grafana's provisioning points
  into the mounts.
* ``deploy/kubernetes/``: core kinds against the Kubernetes JSON schemas of
  ``kubernetes-validate`` (strict); the CRD kinds' structure; the ConfigMap's
  config through the daemon's own parser with the example Secret's values;
  probes, ports, shard arguments, Secret keys and labels fit together;
  ``prometheusrule.yaml`` is what the generator makes of the rule files.
* ``deploy/systemd/smtp-probe.service``: ``systemd-analyze verify`` (in a
  scratch root holding the unit, the system's units and its executables),
  ``systemd-analyze security --offline`` under a threshold, and the
  hardening settings.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from smtp_probe import shard as sharding
from smtp_probe.config import parse_config
from smtp_probe.config.runtime import Config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
KUBE = DEPLOY / "kubernetes"
RULES_DIR = DEPLOY / "prometheus" / "rules"
GENERATOR = KUBE / "generate_prometheusrule.py"
UNIT = DEPLOY / "systemd" / "smtp-probe.service"
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
CONFIG_PATH = "/etc/smtp-probe/config.yml"
HTTP_PORT = 10587
JOB = "smtp-probe"
CRD_API = "monitoring.coreos.com/v1"
POD_INDEX_FIELD = "metadata.labels['apps.kubernetes.io/pod-index']"

Doc = dict[str, Any]


def load_docs(path: Path) -> list[Doc]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert all(isinstance(d, dict) for d in docs), path
    return docs


def dockerfile_instruction(keyword: str) -> str:
    """The last ``keyword`` instruction's argument text in the Dockerfile.

    (tests/deploy/test_container.py builds the Dockerfile with podman and runs the image.)
    """
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = [
        line.split(None, 1)[1]
        for line in joined.splitlines()
        if line.split(None, 1)[:1] == [keyword]
    ]
    assert found, keyword
    return found[-1]


def dockerfile_cmd() -> list[str]:
    value = json.loads(dockerfile_instruction("CMD"))
    assert isinstance(value, list)
    return [str(v) for v in value]


# ------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> Doc:
    (doc,) = load_docs(COMPOSE)
    return doc


@pytest.fixture(scope="module")
def compose_validator() -> Any:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def _errors(validator: Any, doc: Doc) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def test_compose_file_validates_against_the_compose_spec(
    compose: Doc, compose_validator: Any
) -> None:
    assert _errors(compose_validator, compose) == []
    # The validator is real: an unknown service key is an error.
    broken = copy.deepcopy(compose)
    broken["services"]["smtp-probe"]["restart_policy"] = "always"
    assert _errors(compose_validator, broken)


def _bind_mounts(service: Doc) -> Iterator[tuple[Path, str]]:
    """``(host source, container target)`` of each bind mount; short syntax too."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                yield (DEPLOY / source).resolve(), target
        elif volume["type"] == "bind":
            assert volume.get("bind", {}).get("create_host_path") is False, (
                f"{volume['source']}: a missing file must fail, not become an empty directory"
            )
            yield (DEPLOY / volume["source"]).resolve(), volume["target"]


def test_every_file_compose_mounts_is_in_the_repo(compose: Doc) -> None:
    mounts = [m for service in compose["services"].values() for m in _bind_mounts(service)]
    assert len(mounts) >= 5
    for source, target in mounts:
        assert source.is_relative_to(REPO), f"{source} is outside the repository"
        assert source.exists(), f"{source.relative_to(REPO)} (mounted at {target}) is missing"
        if Path(target).suffix in {".yml", ".yaml", ".json"}:
            assert source.is_file(), source
        else:
            assert source.is_dir(), source
            assert any(source.iterdir()), f"{source.relative_to(REPO)} is empty"


def test_compose_smtp_probe_builds_the_image_and_runs_the_demo(compose: Doc) -> None:
    service = compose["services"]["smtp-probe"]
    context = (DEPLOY / service["build"]["context"]).resolve()
    assert context == REPO
    assert (context / service["build"]["dockerfile"]) == REPO / "Dockerfile"
    command = service["command"]
    assert command[0] == "demo"
    listen = command[command.index("--listen") + 1]
    # The image's HEALTHCHECK asks 127.0.0.1:10587: the demo must listen there.
    assert listen == f"0.0.0.0:{HTTP_PORT}"
    assert f"127.0.0.1:{HTTP_PORT}" in dockerfile_instruction("HEALTHCHECK")
    assert dockerfile_instruction("EXPOSE") == str(HTTP_PORT)
    assert f"127.0.0.1:{HTTP_PORT}:{HTTP_PORT}" in service["ports"]
    grace = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
    assert grace is not None
    assert int(grace[1]) > 30, "SIGTERM lets runs finish for up to 30 s"
    # (The schema does not enumerate restart policies.)
    for name, other in compose["services"].items():
        assert other.get("restart", "no") in {"no", "always", "on-failure", "unless-stopped"}, name
    # Every published port is on the host's loopback only.
    for name, other in compose["services"].items():
        for port in other.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def _flag(command: list[str], name: str) -> str:
    values = [c.split("=", 1)[1] for c in command if c.startswith(f"{name}=")]
    assert len(values) == 1, name
    return values[0]


def _materialize(service: Doc, root: Path) -> None:
    """Lay the service's bind mounts out under ``root`` as the container sees them."""
    for source, target in _bind_mounts(service):
        assert source.exists(), f"{source.relative_to(REPO)} (mounted at {target}) is missing"
        destination = root / target.lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination)
        else:
            shutil.copy2(source, destination)


def _mounted_config_file(service: Doc, root: Path) -> Path:
    """The service's ``--config.file``, laid out under ``root`` with the rest of its mounts."""
    _materialize(service, root)
    config_file = root / _flag(service["command"], "--config.file").lstrip("/")
    assert config_file.is_file(), "--config.file is not a mounted file"
    return config_file


def test_compose_prometheus_config_passes_promtool_as_mounted(compose: Doc, tmp_path: Path) -> None:
    service = compose["services"]["prometheus"]
    config_file = _mounted_config_file(service, tmp_path)
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool (Debian package prometheus) is needed"
    done = subprocess.run(
        [promtool, "check", "config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    rule_files = sorted(RULES_DIR.glob("*.yml"))
    assert rule_files, "deploy/prometheus/rules/*.yml are missing"
    for rule_file in rule_files:  # the glob found them where they are mounted
        assert f"rules/{rule_file.name}" in output, output

    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs[JOB]["static_configs"] for t in sc["targets"]]
    assert targets == [f"smtp-probe:{HTTP_PORT}"]
    assert "smtp-probe" in compose["services"]
    alertmanagers = [
        t
        for am in config["alerting"]["alertmanagers"]
        for sc in am["static_configs"]
        for t in sc["targets"]
    ]
    assert alertmanagers == ["alertmanager:9093"]
    assert "alertmanager" in compose["services"]


def test_compose_alertmanager_gets_the_repo_config(compose: Doc, tmp_path: Path) -> None:
    service = compose["services"]["alertmanager"]
    config_file = _mounted_config_file(service, tmp_path)
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    assert isinstance(config, dict)
    assert "route" in config
    assert "receivers" in config


def test_compose_grafana_provisioning_points_into_its_mounts(compose: Doc, tmp_path: Path) -> None:
    service = compose["services"]["grafana"]
    _materialize(service, tmp_path)
    provisioning = tmp_path / "etc/grafana/provisioning"
    providers = [
        p
        for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for p in yaml.safe_load(f.read_text(encoding="utf-8"))["providers"]
    ]
    assert providers, "no dashboard provider is provisioned"
    for provider in providers:
        path = tmp_path / provider["options"]["path"].lstrip("/")
        assert sorted(path.glob("*.json")), f"{provider['options']['path']}: no dashboards"
    datasources = [
        d
        for f in sorted((provisioning / "datasources").glob("*.y*ml"))
        for d in yaml.safe_load(f.read_text(encoding="utf-8"))["datasources"]
    ]
    prometheus = [d for d in datasources if d["type"] == "prometheus"]
    assert prometheus
    for datasource in prometheus:
        url = urllib.parse.urlsplit(datasource["url"])
        assert (url.hostname, url.port) == ("prometheus", 9090), datasource["url"]


# ---------------------------------------------------------------- kubernetes


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], Doc]:
    """Every Kubernetes object of deploy/kubernetes, by ``(kind, name)``."""
    found: dict[tuple[str, str], Doc] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in load_docs(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} twice"
            found[key] = doc
    return found


def _versions() -> list[str]:
    return ["1.28", kubernetes_validate.latest_version()]


def test_core_kinds_validate_strictly_against_kubernetes_schemas(
    manifests: dict[tuple[str, str], Doc],
) -> None:
    kinds = set()
    for (kind, name), doc in manifests.items():
        assert "namespace" not in doc["metadata"], f"{kind}/{name}: manifests are namespace-less"
        if doc["apiVersion"] == CRD_API:
            continue
        for version in _versions():
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(map(str, exc.path))
                pytest.fail(f"{kind}/{name} (Kubernetes {version}): {where}: {exc.message}")
        kinds.add(kind)
    assert kinds == {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
    }
    # The validation is real: an unknown field in the pod spec is an error.
    broken = copy.deepcopy(manifests[("Deployment", "smtp-probe")])
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, _versions()[0], strict=True)


def _services(manifests: dict[tuple[str, str], Doc]) -> list[Doc]:
    return [doc for (kind, _), doc in manifests.items() if kind == "Service"]


def test_servicemonitor_scrapes_every_service_as_job_smtp_probe(
    manifests: dict[tuple[str, str], Doc],
) -> None:
    monitor = manifests[("ServiceMonitor", "smtp-probe")]
    assert monitor["apiVersion"] == CRD_API
    spec = monitor["spec"]
    selector = spec["selector"]["matchLabels"]
    services = _services(manifests)
    assert len(services) == 2
    for service in services:
        labels = service["metadata"]["labels"]
        assert selector.items() <= labels.items(), service["metadata"]["name"]
        assert labels[spec["jobLabel"]] == JOB, "the rules select job=smtp-probe"
        port_names = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in spec["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
    for rule_file in sorted(RULES_DIR.glob("*.yml")):
        for job in re.findall(r'job="([^"]+)"', rule_file.read_text(encoding="utf-8")):
            assert job == JOB, f"{rule_file.name} selects job {job!r}"


def _rule_groups(files: list[Path]) -> list[Any]:
    groups: list[Any] = []
    for path in files:
        groups.extend(yaml.safe_load(path.read_text(encoding="utf-8"))["groups"])
    return groups


def _generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_prometheusrule_is_generated_from_the_rule_files(
    manifests: dict[tuple[str, str], Doc],
) -> None:
    checked_in = (KUBE / "prometheusrule.yaml").read_text(encoding="utf-8")
    done = _generate("--rules-dir", str(RULES_DIR), "--output", "-")
    assert done.returncode == 0, done.stderr
    assert done.stdout == checked_in, (
        "prometheusrule.yaml is out of date: python deploy/kubernetes/generate_prometheusrule.py"
    )
    assert _generate("--check").returncode == 0
    rule = manifests[("PrometheusRule", "smtp-probe")]
    assert rule["apiVersion"] == CRD_API
    assert rule["kind"] == "PrometheusRule"
    rule_files = sorted(RULES_DIR.glob("*.yml"))
    assert rule_files, "deploy/prometheus/rules/*.yml are missing"
    assert rule["spec"]["groups"] == _rule_groups(rule_files)
    for group in rule["spec"]["groups"]:
        assert group["name"]
        assert group["rules"]
        for item in group["rules"]:
            assert ("alert" in item) != ("record" in item)
            assert item["expr"]


def test_generator_carries_groups_in_file_order_and_rejects_duplicates(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(
        "groups:\n  - name: b\n    rules:\n      - record: job:up:sum\n        expr: |\n"
        "          sum by (job) (\n            up\n          )\n",
        encoding="utf-8",
    )
    (tmp_path / "a.yml").write_text(
        "groups:\n  - name: a\n    rules:\n      - alert: Down\n        expr: up == 0\n"
        "        for: 5m\n        labels: {severity: page}\n"
        "        annotations: {summary: '{{ $labels.instance }} is down'}\n",
        encoding="utf-8",
    )
    (tmp_path / "ignored.txt").write_text("not a rule file", encoding="utf-8")
    done = _generate("--rules-dir", str(tmp_path), "--output", "-")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# GENERATED by deploy/kubernetes/generate_prometheusrule.py")
    (generated,) = yaml.safe_load_all(done.stdout)
    assert generated["spec"]["groups"] == _rule_groups([tmp_path / "a.yml", tmp_path / "b.yml"])
    assert "expr: |" in done.stdout, "multi-line PromQL stays readable"

    output = tmp_path / "out.yaml"
    output.write_text("stale\n", encoding="utf-8")
    assert (
        _generate("--rules-dir", str(tmp_path), "--output", str(output), "--check").returncode == 1
    )

    (tmp_path / "c.yml").write_text("groups:\n  - name: a\n    rules: []\n", encoding="utf-8")
    done = _generate("--rules-dir", str(tmp_path), "--output", "-")
    assert done.returncode == 2
    assert "group 'a'" in done.stderr


def _pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def _container(doc: Doc) -> Doc:
    (container,) = _pod_spec(doc)["containers"]
    assert isinstance(container, dict)
    return container


def _workloads(manifests: dict[tuple[str, str], Doc]) -> list[Doc]:
    return [doc for (kind, _), doc in manifests.items() if kind in {"Deployment", "StatefulSet"}]


def _load_configmap_config(
    manifests: dict[tuple[str, str], Doc], workload: Doc, tmp: Path
) -> Config:
    """The ConfigMap's config as ``workload``'s container would load it.

    The example Secret's values become the files of the Secret volume (under
    ``tmp`` instead of the mount path) and the ``secretKeyRef`` environment.
    """
    container = _container(workload)
    volumes = {v["name"]: v for v in _pod_spec(workload)["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}

    config_dir, config_name = CONFIG_PATH.rsplit("/", 1)
    config_volume = mounts[config_dir]["configMap"]
    items = {i["path"]: i["key"] for i in config_volume.get("items", [])}
    configmap = manifests[("ConfigMap", config_volume["name"])]
    text: str = configmap["data"][items.get(config_name, config_name)]

    secrets_seen = 0
    for mount_path, volume in mounts.items():
        if "secret" not in volume:
            continue
        secret = manifests[("Secret", volume["secret"]["secretName"])]
        local = tmp / f"secret-{secrets_seen}"
        local.mkdir()
        secrets_seen += 1
        for item in volume["secret"]["items"]:
            (local / item["path"]).write_text(secret["stringData"][item["key"]], encoding="utf-8")
        assert mount_path in text, f"the config uses no file of {mount_path}"
        text = text.replace(f"{mount_path}/", f"{local}/")
    assert secrets_seen, "no Secret volume"

    environ: dict[str, str] = {}
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            environ[env["name"]] = manifests[("Secret", ref["name"])]["stringData"][ref["key"]]
    assert environ, "no secretKeyRef"
    for name in environ:
        assert f"${{{name}}}" in text, f"the config does not use ${{{name}}}"
    return parse_config(text, environ=environ)


def test_configmap_config_parses_with_the_secrets_the_pods_get(
    manifests: dict[tuple[str, str], Doc], tmp_path: Path
) -> None:
    for index, workload in enumerate(_workloads(manifests)):
        workdir = tmp_path / str(index)
        workdir.mkdir()
        config = _load_configmap_config(manifests, workload, workdir)
        assert len(config.probes) >= 1
        assert config.token_secret is not None, "every pod must sign with the same key"
        ports = {p["name"]: p["containerPort"] for p in _container(workload)["ports"]}
        assert config.server.port == ports["http"] == HTTP_PORT


def test_example_secret_is_clearly_an_example(manifests: dict[tuple[str, str], Doc]) -> None:
    secrets = [key for key in manifests if key[0] == "Secret"]
    assert secrets == [("Secret", "smtp-probe-secrets")]
    secret = manifests[secrets[0]]
    text = (KUBE / "secret.example.yaml").read_text(encoding="utf-8")
    assert text.startswith("# EXAMPLE ONLY")
    for value in secret["stringData"].values():
        assert "EXAMPLE" in value
        assert "change-me" in value
    # Every key the pods use is in the example, and nothing else.
    used = set()
    for workload in _workloads(manifests):
        for volume in _pod_spec(workload)["volumes"]:
            if "secret" in volume:
                used |= {i["key"] for i in volume["secret"]["items"]}
        for env in _container(workload).get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                used.add(ref["key"])
    assert used == set(secret["stringData"])


def _port_number(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def test_workloads_probe_health_and_readiness_on_the_container_port(
    manifests: dict[tuple[str, str], Doc],
) -> None:
    user = dockerfile_instruction("USER").split(":")[0]
    for workload in _workloads(manifests):
        name = workload["metadata"]["name"]
        container = _container(workload)
        for probe, path in (
            ("livenessProbe", "/-/healthy"),
            ("startupProbe", "/-/healthy"),
            ("readinessProbe", "/-/ready"),
        ):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{name}: {probe}"
            assert _port_number(container, get["port"]) == HTTP_PORT, f"{name}: {probe}"
        assert container["args"][:3] == dockerfile_cmd(), f"{name}: args start as the image CMD"

        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == user
        assert pod["terminationGracePeriodSeconds"] > 30
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]["memory"]
        assert container["resources"]["limits"]["memory"]

        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        matching = [
            s for s in _services(manifests) if s["spec"]["selector"].items() <= labels.items()
        ]
        assert len(matching) == 1, f"{name}: exactly one Service selects its pods"
        for port in matching[0]["spec"]["ports"]:
            assert _port_number(container, port["targetPort"]) == HTTP_PORT


def test_deployment_runs_two_replicas_that_roll_one_at_a_time_on_different_nodes(
    manifests: dict[tuple[str, str], Doc],
) -> None:
    """README "High availability": 2 replicas, never fewer than 2 ready during a rollout.

    maxUnavailable 0 with maxSurge 1 starts a new pod and waits for it to be
    ready before an old one stops; the anti-affinity spreads the replicas
    over nodes (preferred, so a one-node cluster still runs both); the
    PodDisruptionBudget lets a drain evict only one at a time.
    """
    deployment = manifests[("Deployment", "smtp-probe")]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod_labels = spec["template"]["metadata"]["labels"]
    (term,) = _pod_spec(deployment)["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == pod_labels

    budget = manifests[("PodDisruptionBudget", "smtp-probe")]
    assert budget["apiVersion"] == "policy/v1"
    assert 1 <= budget["spec"]["minAvailable"] < spec["replicas"]
    selector = budget["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    # Its selector is the Deployment's alone: the shards are no replicas of it.
    for workload in _workloads(manifests):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        selected = selector.items() <= labels.items()
        assert selected == (workload is deployment), workload["metadata"]["name"]

    # Both replicas sign with one key: the token comes from the shared Secret,
    # not from anything per pod.
    volumes = {v["name"]: v for v in _pod_spec(deployment)["volumes"]}
    secret_items = {i["key"] for i in volumes["secrets"]["secret"]["items"]}
    assert "token" in secret_items


def test_statefulset_runs_one_shard_per_pod_index(
    manifests: dict[tuple[str, str], Doc], tmp_path: Path
) -> None:
    statefulset = manifests[("StatefulSet", "smtp-probe-shards")]
    replicas = statefulset["spec"]["replicas"]
    assert replicas >= 2
    headless = manifests[("Service", statefulset["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"

    container = _container(statefulset)
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == POD_INDEX_FIELD
    args = container["args"]
    shard = args[args.index("--shard") + 1]
    assert shard == f"$(POD_INDEX)/{replicas}", "N of --shard must equal replicas"

    config = _load_configmap_config(manifests, statefulset, tmp_path)
    covered: list[str] = []
    for index in range(replicas):
        # Kubernetes expands $(VAR) in args from the container's env.
        expanded = shard.replace("$(POD_INDEX)", str(index))
        assert sharding.parse_shard(expanded) == (index, replicas)
        covered.extend(p.name for p in sharding.shard(config, index, replicas).probes)
    assert sorted(covered) == sorted(p.name for p in config.probes), "each probe in one shard"


# -------------------------------------------------------------------- systemd


def unit_settings(text: str) -> dict[str, list[tuple[str, str]]]:
    """``section -> [(key, value), ...]`` in file order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, eq, value = line.partition("=")
        assert eq, f"not KEY=VALUE: {line!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def _one(settings: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in settings if k == key]
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def test_systemd_unit_is_hardened() -> None:
    service = unit_settings(UNIT.read_text(encoding="utf-8"))["Service"]
    expected = {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "Restart": "on-failure",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "KillSignal": "SIGTERM",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "ProtectProc": "invisible",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert _one(service, key) == value, key
    assert "@system-service" in [v for k, v in service if k == "SystemCallFilter"]
    families = _one(service, "RestrictAddressFamilies").split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    exec_start = _one(service, "ExecStart").split()
    assert Path(exec_start[0]).name == "smtp-probe"
    assert exec_start[1:] == dockerfile_cmd(), "the same command and config path as the image"
    stop = re.fullmatch(r"(\d+)s", _one(service, "TimeoutStopSec"))
    assert stop is not None
    assert int(stop[1]) > 30
    credentials = [v for k, v in service if k == "LoadCredential"]
    assert credentials
    text = UNIT.read_text(encoding="utf-8")
    for credential in credentials:
        name = credential.split(":")[0]
        assert f"/run/credentials/smtp-probe.service/{name}" in text, "documented use"


def _systemd_root(tmp_path: Path, unit_text: str) -> Path:
    """A scratch root for ``systemd-analyze --root``.

    It holds the unit, the system's units, and stand-ins for the executables
    the unit names (verify checks that they exist).
    """
    root = tmp_path / "root"
    system_units = Path("/usr/lib/systemd/system")
    assert system_units.is_dir(), "systemd (Debian package systemd) is needed"
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system" / UNIT.name).write_text(unit_text, encoding="utf-8")
    for key, value in unit_settings(unit_text)["Service"]:
        if key.startswith("Exec"):
            executable = root / value.split()[0].lstrip("-@:+!").lstrip("/")
            executable.parent.mkdir(parents=True, exist_ok=True)
            executable.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
            executable.chmod(0o755)
    return root


def _systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze (Debian package systemd) is needed"
    return subprocess.run(
        [analyze, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8")
    root = _systemd_root(tmp_path / "good", text)
    done = _systemd_analyze("verify", "--man=no", f"--root={root}", UNIT.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == "", "verify printed warnings"
    # Exposure 0.0 (best) .. 10.0 ("OK" up to 4.9); this unit scores 1.2 on systemd 252.
    done = _systemd_analyze(
        "security", "--offline=true", f"--root={root}", "--threshold=15", "--no-pager", UNIT.name
    )
    assert done.returncode == 0, done.stdout + done.stderr

    # verify is real: a misspelt key is reported.
    broken = text.replace("ProtectSystem=strict", "ProtectSytem=strict")
    root = _systemd_root(tmp_path / "broken", broken)
    done = _systemd_analyze("verify", "--man=no", f"--root={root}", UNIT.name)
    assert "Unknown key 'ProtectSytem'" in done.stdout + done.stderr
