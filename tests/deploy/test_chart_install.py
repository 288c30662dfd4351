"""docs/deploy.md's `helm install` command makes pods that start: every environment variable the chart's config
names (`*_env`) reaches the gateway container with a value. The gateway refuses to start on a named variable
that is unset or empty (config/env.py `env_secret`), so a value the command leaves at the chart's "" is a pod
that crash-loops."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml
from helm_render import FILLED, ROOT, config_yaml, pod_env, render_manifests, render_objects

from multihome.config import parse_config
from multihome.config.env import named_env_vars


def _documented_install() -> dict:
    """The values the `helm install` of docs/deploy.md sets (`--set a.b=v`; a `...` placeholder is a value)."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    (block,) = [b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "helm install" in b]
    words = shlex.split(block.replace("\\\n", " "))
    values: dict = {}
    for flag, setting in zip(words, words[1:], strict=False):
        if flag != "--set":
            continue
        path, value = setting.split("=", 1)
        *parents, leaf = path.split(".")
        node = values
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return values


def test_the_documented_install_gives_the_gateway_every_variable_its_config_names():
    objects = render_objects(_documented_install())
    config = parse_config(config_yaml(objects))
    env = pod_env(objects)
    named = {var: where for where, var in named_env_vars(config)}
    unset = {var: where for var, where in named.items() if not env.get(var)}
    # Before: the client key, the admin key and the provider's key were left at "": the pods never started.
    assert not unset, f"the documented install leaves these unset (the gateway refuses to start): {unset}"


def test_an_install_that_leaves_a_secret_empty_is_refused_not_rendered_into_crash_looping_pods():
    with pytest.raises(Exception, match="secret.env.MULTIHOME_ADMIN_KEY is empty"):
        render_manifests({"secret": {"env": {**FILLED["secret"]["env"], "MULTIHOME_ADMIN_KEY": ""}}})


def test_a_variable_the_config_names_without_a_secret_entry_is_refused():
    config = yaml.safe_load((ROOT / "deploy/helm/multihome/values.yaml").read_text())["config"]
    config["providers"]["anthropic"] = {
        "kind": "anthropic",
        "endpoint": "https://api.anthropic.com",
        "auth": {"api_key_env": "ANTHROPIC_KEY"},
    }
    config["server"]["api_keys_env"] = ["MULTIHOME_CLIENT_KEY", "SECOND_CLIENT_KEY"]
    with pytest.raises(Exception, match="names the variable ANTHROPIC_KEY"):
        render_manifests({"config": config})
    del config["providers"]["anthropic"]
    with pytest.raises(Exception, match="names the variable SECOND_CLIENT_KEY"):
        render_manifests({"config": config})
    # Every name the chart's check finds is one the gateway reads (the same walk as config/env.py's).
    config["server"]["api_keys_env"] = ["MULTIHOME_CLIENT_KEY"]
    objects = render_objects({"config": config})
    assert {var for _, var in named_env_vars(parse_config(config_yaml(objects)))} <= {
        *FILLED["secret"]["env"],
        "MULTIHOME_CONSOLE_KEY",
    }


def test_a_secret_made_outside_the_chart_is_not_checked_at_render():
    kinds = {o["kind"] for o in render_objects({"secret": {"create": False, "existingSecret": "made-elsewhere"}})}
    assert "Deployment" in kinds
