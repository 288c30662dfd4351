"""The Helm chart rendered by Helm's own engine (helm-python-sdk), and what a pod of it is given: shared by the
tests of tests/deploy/ (docs/deploy.md)."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml
from helm_python import Chart

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "multihome"


# Each variable the chart's default config names, with a value: the chart refuses to render an empty one.
FILLED = {
    "secret": {
        "env": {
            var: f"test-{var.lower()}" for var in yaml.safe_load((CHART / "values.yaml").read_text())["secret"]["env"]
        }
    }
}


def render_manifests(values: dict | None = None) -> dict[str, str]:
    """The chart's files as `helm install mh -n ai` renders them; `values` over FILLED (a top-level key replaces
    FILLED's). Raises helm_python's error where the chart refuses (`fail`)."""
    return Chart.load(CHART).render(FILLED | (values or {}), name="mh", namespace="ai", is_install=True)


def render_objects(values: dict | None = None) -> list[dict]:
    """Every object the chart renders with `values` (render_manifests)."""
    return [doc for text in render_manifests(values).values() for doc in yaml.safe_load_all(text) if doc]


def _secret_values(secret: dict) -> dict[str, str]:
    out = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return {**out, **(secret.get("stringData") or {})}


def pod_env(objects: list[dict], existing: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """The environment the gateway container gets: its Secrets' values (`existing`: Secrets made outside)."""
    secrets = {o["metadata"]["name"]: _secret_values(o) for o in objects if o["kind"] == "Secret"} | (existing or {})
    container = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", ()):
        env.update(secrets[source["secretRef"]["name"]])
    for var in container.get("env", ()):
        ref = var["valueFrom"]["secretKeyRef"] if "valueFrom" in var else None
        env[var["name"]] = secrets[ref["name"]][ref["key"]] if ref else var["value"]
    return env


def config_yaml(objects: list[dict]) -> str:
    """The gateway's config file as the chart's ConfigMap holds it."""
    return next(o for o in objects if o["kind"] == "ConfigMap")["data"]["config.yaml"]
