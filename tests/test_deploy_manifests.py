"""deploy/: the Kubernetes manifests and the Dockerfile agree with each other and with the
code they run.

Every YAML under deploy/k8s parses and has the kinds and fields the issue asks for. Container
command lines are parsed with munggoggo's own argparse parser (an invalid command fails
here, not in a crash-looping pod), and the ports it serves (--health-port, --metrics-port,
--port) are the ports the containers declare and the probes and scrapes point at; probe
paths are routes those servers answer. Images match between base and overlay and the
Dockerfile runs the console script pyproject installs, as a non-root user. When kubectl is
installed, `kubectl kustomize` builds the base and the overlay and the output is checked too.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from munggoggo import __version__
from munggoggo.agent import Agent, AgentConfig
from munggoggo.cli import build_parser, load_agent_class
from munggoggo.gateway.app import create_app
from munggoggo.gateway.state import GatewaySettings
from munggoggo.health import HealthServer

# Checks of the sources and the packaging: neither the speedups nor the broker change
# them, so CI runs them in its first pass only (.ci/run).
pytestmark = pytest.mark.static

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
BENCH = K8S / "bench"  # the load-test Job, apart from the installation
BENCH_OVERLAY = K8S / "overlays" / "example-bench"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGE = "munggoggo"  # the image name the base uses and kustomize `images:` rewrites
KUBECTL = shutil.which("kubectl")


def load_dir(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """file name -> its YAML documents (kustomization.yaml included)."""
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        for path in sorted(directory.glob("*.yaml"))
    }


def resources(directory: Path) -> list[dict[str, Any]]:
    return [
        doc
        for name, docs in load_dir(directory).items()
        if name != "kustomization.yaml"
        for doc in docs
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def declared_ports(c: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c["ports"]}


def probe_port(c: dict[str, Any], probe: str) -> tuple[str, int]:
    """(path, port number) of a container's HTTP probe; a named port must be declared."""
    get = c[probe]["httpGet"]
    port = get["port"]
    ports = declared_ports(c)
    if isinstance(port, str):
        assert port in ports, f"{probe} uses port {port!r}, not declared in {ports}"
        port = ports[port]
    assert port in ports.values(), f"{probe} port {port} is not a declared container port"
    return get["path"], port


def cli_args(c: dict[str, Any]):
    """The container's command line through munggoggo's own parser (exits on an error)."""
    assert "command" not in c, "keep the image's ENTRYPOINT (munggoggo): give args only"
    return build_parser().parse_args([str(a) for a in c["args"]])


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# -- every file ----------------------------------------------------------------------------


def all_yaml_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


@pytest.mark.parametrize("path", all_yaml_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_yaml_file_parses_with_kind_and_name(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion and kind"
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"], f"{path}: metadata.name"


@pytest.mark.parametrize(
    "directory",
    [BASE, OVERLAY, BENCH, BENCH_OVERLAY],
    ids=["base", "overlay", "bench", "bench-overlay"],
)
def test_the_kustomization_lists_every_file_and_only_existing_ones(directory):
    (kustomization,) = load_dir(directory)["kustomization.yaml"]
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    listed = kustomization["resources"]
    local = {r for r in listed if not r.startswith("..")}
    present = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert local == present
    for r in listed:
        assert (directory / r).exists(), f"{r} listed but missing"


def test_the_base_has_every_kind_the_deployment_needs():
    docs = resources(BASE)
    kinds = {(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in docs}
    assert kinds == {
        ("rabbitmq.com/v1beta1", "RabbitmqCluster", "rabbitmq"),
        ("apps/v1", "Deployment", "agent"),
        ("apps/v1", "Deployment", "gateway"),
        ("v1", "Service", "gateway"),
        ("autoscaling/v2", "HorizontalPodAutoscaler", "gateway"),
        ("monitoring.coreos.com/v1", "PodMonitor", "munggoggo"),
        ("policy/v1", "PodDisruptionBudget", "agent"),
        ("policy/v1", "PodDisruptionBudget", "gateway"),
    }
    assert one(docs, "RabbitmqCluster", "rabbitmq")["spec"]["replicas"] == 3


# -- deployments ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["agent", "gateway"])
def test_deployments_are_well_formed_and_not_root(name):
    d = one(resources(BASE), "Deployment", name)
    spec, pod = d["spec"], d["spec"]["template"]["spec"]
    assert labels_match(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    c = container(d)
    assert c["image"] == IMAGE
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), f"resources.{kind}"
    (url,) = [e for e in c["env"] if e["name"] == "MUNGGOGGO_URL"]
    assert url["valueFrom"]["secretKeyRef"] == {"name": "broker", "key": "url"}


def test_the_agent_runs_a_real_class_and_its_probes_hit_its_health_port():
    c = container(one(resources(BASE), "Deployment", "agent"))
    args = cli_args(c)
    assert args.command == "run"
    assert issubclass(load_agent_class(args.target), Agent)
    ports = declared_ports(c)
    assert ports["health"] == args.health_port
    assert ports["metrics"] == args.metrics_port
    assert probe_port(c, "livenessProbe") == ("/livez", args.health_port)
    assert probe_port(c, "readinessProbe") == ("/readyz", args.health_port)
    # ... and those are paths the health server answers (not 404).
    health = HealthServer(0, addr="127.0.0.1")
    try:
        for probe in ("livenessProbe", "readinessProbe"):
            path = c[probe]["httpGet"]["path"]
            status, _ = health.answer(f"GET {path} HTTP/1.1\r\n\r\n".encode())
            assert status in (200, 503), (path, status)
    finally:
        health.close()
    # The identity comes from the pod name: unique per replica.
    assert args.identity == "$(POD_NAME)"
    (pod_name,) = [e for e in c["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_the_agent_gets_longer_than_its_drain_to_stop():
    pod = one(resources(BASE), "Deployment", "agent")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > AgentConfig().drain_timeout


def test_the_gateway_probes_and_service_hit_the_port_it_serves():
    docs = resources(BASE)
    d = one(docs, "Deployment", "gateway")
    c = container(d)
    args = cli_args(c)
    assert args.command == "gateway"
    assert args.host == "0.0.0.0"  # reachable from the kubelet and the Service
    assert declared_ports(c)["http"] == args.port
    routes = set(create_app(GatewaySettings()).router.routes())
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert probe_port(c, probe) == (path, args.port)
        assert (path, "GET") in routes
    assert ("/metrics", "GET") in routes
    assert args.metrics_public, "the PodMonitor scrapes /metrics without a token"
    service = one(docs, "Service", "gateway")
    assert service["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(declared_ports(c))
    # The tokens file the command names is where the Secret is mounted.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert Path(args.tokens_file).parent == Path(mounts["tokens"])


def test_the_hpa_scales_the_gateway_on_cpu():
    docs = resources(BASE)
    hpa = one(docs, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    gateway = one(docs, "Deployment", "gateway")
    assert "replicas" not in gateway["spec"], "the HPA owns the replica count"
    assert container(gateway)["resources"]["requests"]["cpu"]  # utilisation is relative to it


def test_disruption_budgets_and_the_pod_monitor_select_real_pods():
    docs = resources(BASE)
    pods = {
        name: one(docs, "Deployment", name)["spec"]["template"] for name in ("agent", "gateway")
    }
    for name, template in pods.items():
        pdb = one(docs, "PodDisruptionBudget", name)["spec"]
        assert labels_match(pdb["selector"]["matchLabels"], template["metadata"]["labels"])
        assert ("minAvailable" in pdb) != ("maxUnavailable" in pdb)
    monitor = one(docs, "PodMonitor", "munggoggo")["spec"]
    selected = [t for t in pods.values() if labels_match(monitor["selector"]["matchLabels"],
                                                          t["metadata"]["labels"])]  # fmt: skip
    assert len(selected) == 2
    scraped = {e["port"] for e in monitor["podMetricsEndpoints"]}
    agent_c = container(one(docs, "Deployment", "agent"))
    gateway_c = container(one(docs, "Deployment", "gateway"))
    assert scraped == {"metrics", "http"}
    assert cli_args(agent_c).metrics_port == declared_ports(agent_c)["metrics"]
    assert cli_args(gateway_c).port == declared_ports(gateway_c)["http"]
    assert all(e["path"] == "/metrics" for e in monitor["podMetricsEndpoints"])


# -- the bench Job ---------------------------------------------------------------------------


def test_the_bench_job_runs_as_many_pods_as_instances_it_waits_for():
    (job,) = resources(BENCH)
    assert (job["apiVersion"], job["kind"], job["metadata"]["name"]) == ("batch/v1", "Job", "bench")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    args = cli_args(container(job))
    assert args.command == "bench"
    assert args.workers_expected > 1
    assert spec["parallelism"] == spec["completions"] == args.workers_expected
    assert args.workers_timeout > 0 and args.json
    assert pod["restartPolicy"] == "Never" and spec["backoffLimit"] == 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    c = container(job)
    assert c["image"] == IMAGE
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    (url,) = [e for e in c["env"] if e["name"] == "MUNGGOGGO_URL"]
    assert url["valueFrom"]["secretKeyRef"] == {"name": "broker", "key": "url"}
    # The run id is the Job's uid, taken from the pod's label: one name per run of the Job.
    assert args.run_id == "$(JOB_UID)"
    (uid,) = [e for e in c["env"] if e["name"] == "JOB_UID"]
    assert uid["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['batch.kubernetes.io/controller-uid']"
    )


def test_the_bench_job_says_which_kubernetes_sets_its_run_id_label_and_who_fails_it():
    text = (BENCH / "bench-job.yaml").read_text()
    comments = " ".join(
        line.strip().lstrip("#").strip() for line in text.splitlines() if line.startswith("#")
    )
    # The batch.kubernetes.io/controller-uid label the run id comes from is 1.27's.
    assert "Kubernetes 1.27 or later" in comments
    assert "batch.kubernetes.io/controller-uid" in comments
    # Followers exit 0 once acknowledged: the leader's status is the Job's verdict.
    assert "exit 0 once the leader acknowledged their figures" in comments


def test_the_bench_overlay_matches_the_example_installation():
    (bench,) = load_dir(BENCH)["kustomization.yaml"]
    (overlay,) = load_dir(BENCH_OVERLAY)["kustomization.yaml"]
    (example,) = load_dir(OVERLAY)["kustomization.yaml"]
    assert bench["images"] == [{"name": IMAGE, "newTag": __version__}]
    assert overlay["images"] == example["images"]
    assert (overlay["namespace"], overlay["namePrefix"]) == (
        example["namespace"],
        example["namePrefix"],
    )
    assert overlay["resources"] == ["../../bench"]
    secrets = {g["name"]: g["literals"] for g in overlay["secretGenerator"]}
    examples = {g["name"]: g["literals"] for g in example["secretGenerator"]}
    assert secrets == {"broker": examples["broker"]}  # the same broker as the installation


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kustomize_builds_the_bench_overlay():
    result = subprocess.run(
        [KUBECTL, "kustomize", str(BENCH_OVERLAY)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["metadata"]["name"] == "example-bench"
    (url,) = [e for e in container(job)["env"] if e["name"] == "MUNGGOGGO_URL"]
    assert url["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]


# -- base and overlay ----------------------------------------------------------------------


def test_images_agree_between_base_overlay_and_the_project_version():
    (base,) = load_dir(BASE)["kustomization.yaml"]
    (overlay,) = load_dir(OVERLAY)["kustomization.yaml"]
    version = __version__  # the one version source, core/_version.py
    assert base["images"] == [{"name": IMAGE, "newTag": version}]
    (image,) = overlay["images"]
    assert image["name"] == IMAGE and image["newTag"] == version
    images = {c["image"] for d in resources(BASE) if d["kind"] == "Deployment"
              for c in d["spec"]["template"]["spec"]["containers"]}  # fmt: skip
    assert images == {IMAGE}


def test_the_overlay_patches_and_secrets_target_what_the_base_has():
    (overlay,) = load_dir(OVERLAY)["kustomization.yaml"]
    assert overlay["namespace"] and overlay["namePrefix"]
    assert "../../base" in overlay["resources"]
    base = resources(BASE)
    for replica in overlay["replicas"]:
        one(base, "Deployment", replica["name"])
    for patch in overlay["patches"]:
        one(base, patch["target"]["kind"], patch["target"]["name"])
    generated = {g["name"]: dict(kv.split("=", 1) for kv in g["literals"])
                 for g in overlay["secretGenerator"]}  # fmt: skip
    referenced = set()
    for d in base:
        if d["kind"] != "Deployment":
            continue
        pod = d["spec"]["template"]["spec"]
        for env in container(d)["env"]:
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                referenced.add(ref["name"])
                assert ref["key"] in generated[ref["name"]]
        referenced |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    assert referenced == set(generated)
    from munggoggo.url import parse_urls

    assert parse_urls(generated["broker"]["url"])  # the placeholder is a valid URL


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kustomize_builds_the_overlay_with_names_images_and_secrets_resolved():
    for directory in (BASE, OVERLAY):
        result = subprocess.run(
            [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))  # the overlay's
    (overlay,) = load_dir(OVERLAY)["kustomization.yaml"]
    prefix, namespace = overlay["namePrefix"], overlay["namespace"]
    image = overlay["images"][0]
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    for d in docs:
        if d["kind"] == "Namespace":
            assert d["metadata"]["name"] == namespace
            continue
        assert d["metadata"]["name"].startswith(prefix)
        assert d["metadata"]["namespace"] == namespace
        if d["kind"] == "Deployment":
            c = container(d)
            assert c["image"] == f"{image['newName']}:{image['newTag']}"
            (url,) = [e for e in c["env"] if e["name"] == "MUNGGOGGO_URL"]
            assert url["valueFrom"]["secretKeyRef"]["name"] in secrets
    agent = one(docs, "Deployment", f"{prefix}agent")
    assert agent["spec"]["replicas"] == overlay["replicas"][0]["count"]
    hpa = one(docs, "HorizontalPodAutoscaler", f"{prefix}gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{prefix}gateway"


# -- the image -----------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    lines, current = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.endswith("\\"):
            instruction, _, rest = current.strip().partition(" ")
            lines.append((instruction.upper(), rest.strip()))
            current = ""
    return lines


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (ins, _) in enumerate(steps) if ins == "FROM")
    return steps[last_from:]


def test_the_image_is_multi_stage_with_a_slim_runtime():
    froms = [args for ins, args in dockerfile() if ins == "FROM"]
    assert len(froms) >= 2
    assert froms[0].endswith(" AS builder")
    assert froms[-1] == "python:3.11-slim"
    runs = " ".join(args for ins, args in dockerfile() if ins == "RUN")
    assert "pip wheel" in runs and "USING_EXTENSIONS" in runs  # the extension is checked
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    assert '"munggoggo[gateway,metrics]"' in " ".join(a for _, a in final_stage())
    assert {"gateway", "metrics"} <= extras


def test_the_image_runs_the_console_script_as_a_non_root_user():
    stage = final_stage()
    (user,) = [args for ins, args in stage if ins == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root USER (runAsNonRoot checks it)"
    (entrypoint,) = [args for ins, args in stage if ins == "ENTRYPOINT"]
    assert json.loads(entrypoint) == list(PYPROJECT["project"]["scripts"])
    assert PYPROJECT["project"]["scripts"]["munggoggo"] == "munggoggo.cli:main"
    deployments = [d for d in resources(BASE) if d["kind"] == "Deployment"]
    for d in deployments:  # the manifests run as that same user
        assert d["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)
    exposed = {int(p) for ins, args in stage if ins == "EXPOSE" for p in args.split()}
    declared = {p for d in deployments for p in declared_ports(container(d)).values()}
    assert declared <= exposed


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_else():
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*", "an allow-list: everything not named stays out of the context"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for ins, args in dockerfile():
        if ins == "COPY" and "--from" not in args:
            copied |= {src.rstrip("/") for src in shlex.split(args)[:-1]}
    assert copied == allowed
    for path in copied:
        assert (ROOT / path).exists()
    assert PYPROJECT["project"]["readme"] in copied  # the build reads it
