"""docs/deploy.md's `helm install` command makes pods that start: every environment variable the chart's config
names (`*_env`) reaches the gateway container with a value. The gateway refuses to start on a named variable
that is unset or empty (config/env.py `env_secret`), so a value the command leaves at the chart's "" is a pod
that crash-loops."""

from __future__ import annotations

import re
import shlex

from helm_render import ROOT, config_yaml, pod_env, render_objects

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
