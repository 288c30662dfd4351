"""The packaging (docs/deploy.md): the Helm chart rendered by Helm's own engine (helm-python-sdk, Helm v4's
Go template code as a library) and every object validated against the Kubernetes schemas
(kubernetes-validate); the config the chart and docker-compose.yml hand the gateway is one it accepts;
the Dockerfile's shape (no container tool runs here to build it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from helm_render import render_objects

from multihome.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "multihome"
KUBERNETES = "1.30"


def _render(values: dict | None = None) -> dict[str, dict]:
    """kind -> the rendered object (one of each kind in this chart, but the console's session key Secret:
    `Secret/console`)."""
    objects = render_objects(values)
    kinds = {o["kind"] + ("/console" if o["metadata"]["name"] == "mh-multihome-console" else ""): o for o in objects}
    assert len(kinds) == len(objects), "one object of each kind"
    return kinds


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "autoscaling": {"enabled": False},
            "podDisruptionBudget": {"enabled": False},
            "networkPolicy": {"enabled": False},
        },
    ],
)
def test_every_object_validates_against_the_kubernetes_schemas(values):
    for obj in _render(values).values():
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_the_chart_has_what_a_platform_team_expects():
    objs = _render()
    assert set(objs) == {
        "ConfigMap", "Secret", "Secret/console", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"
    }  # fmt: skip
    pod = objs["Deployment"]["spec"]["template"]
    gateway = pod["spec"]["containers"][0]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "prometheus.io/scrape" not in pod["metadata"]["annotations"]  # scraped by a job with a key of its own
    assert gateway["envFrom"][0]["secretRef"]["name"] == objs["Secret"]["metadata"]["name"]
    assert gateway["args"][:3] == ["serve", "--config", "/etc/multihome/config.yaml"]
    # Egress: DNS, the database, Redis and the providers' ranges only.
    egress = objs["NetworkPolicy"]["spec"]["egress"]
    assert [rule["ports"][0]["port"] for rule in egress] == [53, 5432, 6379, 443]
    # The pods' grace period covers the drain deadline the config is given.
    config = parse_config(objs["ConfigMap"]["data"]["config.yaml"])
    assert config.server.drain_timeout_s < pod["spec"]["terminationGracePeriodSeconds"]
    assert config.server.port == gateway["ports"][0]["containerPort"]


def test_a_changed_config_rolls_the_pods():
    before = _render()["Deployment"]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    after = _render({"drainTimeoutSeconds": 30})["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert after["checksum/config"] != before


def test_compose_runs_three_replicas_behind_haproxy_with_a_config_the_gateway_accepts():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "simulator", "init", "gw1", "gw2", "gw3", "haproxy"} <= set(services)
    config = parse_config((ROOT / "deploy" / "compose" / "multihome.yaml").read_text())
    assert config.storage.url_env and config.metering.redis_url_env and config.routing.redis_url_env
    haproxy = (ROOT / "deploy" / "compose" / "haproxy.cfg").read_text()
    assert "option httpchk GET /readyz" in haproxy and all(
        f"server {g} {g}:4000" in haproxy for g in ("gw1", "gw2", "gw3")
    )


def test_the_image_is_multi_stage_slim_and_non_root():
    text = (ROOT / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2 and all("slim" in s for s in stages)
    assert "USER 10001:10001" in text and "COPY --from=build" in text
    assert "-c constraints.txt" in text  # the image gets the versions the suite passed with


def test_the_chart_is_what_docs_deploy_md_says():
    """docs/deploy.md's table of the chart's objects, number by number."""
    objs = _render()
    spec = objs["Deployment"]["spec"]
    pod, meta = spec["template"]["spec"], spec["template"]["metadata"]
    gateway = pod["containers"][0]
    assert gateway["args"][3:] == ["--workers", "2"]
    assert gateway["resources"]["requests"]["cpu"] == "2"  # "Sizing": one worker per core the pod gets
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"
    }
    assert gateway["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert gateway["readinessProbe"]["periodSeconds"] == 2  # a draining pod leaves the Service at once
    assert gateway["startupProbe"]["httpGet"]["path"] == "/readyz"
    config = parse_config(objs["ConfigMap"]["data"]["config.yaml"])
    assert (pod["terminationGracePeriodSeconds"], config.server.drain_timeout_s) == (45, 20)
    assert (config.server.host, config.server.port) == ("0.0.0.0", 4000)
    assert config.metrics.enabled and config.metrics.access == "key"  # every client reaches the port
    assert config.audit is not None and config.audit.dir == "/var/lib/multihome/audit"
    assert config.metering.spool.dir == "/var/lib/multihome/usage-spool"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["audit"] and "emptyDir" in volumes["usage-spool"]  # the defaults the doc warns of
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}  # one at a time, none missing
    scraped = _render({"prometheus": {"scrape": True}})["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert (scraped["prometheus.io/port"], scraped["prometheus.io/path"]) == ("4000", "/metrics")
    assert not any(name.startswith("prometheus.io/") for name in meta["annotations"])
    assert objs["Service"]["spec"]["ports"][0]["port"] == 80
    hpa = objs["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert objs["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert objs["NetworkPolicy"]["spec"]["ingress"][0]["ports"][0]["port"] == 4000


def test_no_local_secret_reaches_the_image_or_its_build_context():
    """The image copies the package's sources only, and the build context leaves out what a checkout may hold
    that is secret: a local KMS master key (`multihome kms init`, `multihome demo`), local databases, .env."""
    copied = [line.split()[1:-1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")]
    assert copied == [["pyproject.toml", "README.md", "constraints.txt"], ["src"], ["--from=build", "/opt/multihome"]]
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {"multihome-kms.key*", "*.key", "*.db", "*.sqlite*", ".env*"} <= ignored


def test_the_wheel_the_image_installs_holds_every_file_of_the_package(tmp_path):
    """The Dockerfile installs a wheel, not the checkout: a template, stylesheet, vendored script or migration
    that package-data does not name is missing from the image only (editable installs read the checkout)."""
    context = tmp_path / "context"  # what the image's build stage copies, and nothing else
    shutil.copytree(ROOT / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(ROOT / name, context / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(tmp_path), str(context)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("multihome-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("multihome/")}
    files = {
        p.relative_to(ROOT / "src").as_posix()
        for p in (ROOT / "src" / "multihome").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert files - shipped == set()
    assert {"multihome/api/console/templates/base.html", "multihome/storage/migrations/script.py.mako"} <= shipped
