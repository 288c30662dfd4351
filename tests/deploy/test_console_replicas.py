"""A console session made on one replica is read by every other (docs/console.md "Configuration"): the Helm
chart's pods and the compose file's gateways share one session key, so a browser the Service or HAProxy sends
to another replica is not sent back to the login form. Each replica is simulated as its own process would
start: `session_key` under the environment its pod or container is given."""

from __future__ import annotations

import base64
import os

import pytest
import yaml
from helm_render import ROOT, config_yaml, pod_env, render_objects

from multihome.api.console.session import SESSION_KEY_ENV, Sessions, session_key
from multihome.config import parse_config
from multihome.config.env import named_env_vars


def _replica_key(config_text: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> bytes:
    """The key one replica's process seals sessions with (a fresh process: nothing inherited from this one)."""
    config = parse_config(config_text)
    with monkeypatch.context() as m:
        m.delenv(SESSION_KEY_ENV, raising=False)
        for name, value in env.items():
            m.setenv(name, value)
        missing = [var for _, var in named_env_vars(config.console) if var not in os.environ]
        assert not missing, f"the config names variables the replica does not get: {missing}"
        return session_key(config.console)


def _one_session_everywhere(keys: list[bytes]) -> None:
    _, cookie = Sessions(keys[0], 3600).new("sk-operator")
    for key in keys[1:]:
        assert Sessions(key, 3600).open(cookie).credential == "sk-operator"  # not SessionError: back to login


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"secret": {"create": False, "existingSecret": "made-elsewhere"}},
        {"console": {"sessionKey": base64.b64encode(b"k" * 32).decode()}},
    ],
    ids=["drawn", "existing-secret", "given"],
)
def test_the_charts_pods_share_the_console_session_key(values, monkeypatch):
    objects = render_objects(values)
    env = pod_env(objects, {"made-elsewhere": {"MULTIHOME_ADMIN_KEY": "sk-admin"}})
    pods = [_replica_key(config_yaml(objects), env, monkeypatch) for _ in range(3)]
    _one_session_everywhere(pods)
    if values.get("console"):
        assert pods[0] == b"k" * 32


def test_composes_gateways_share_the_console_session_key(monkeypatch):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    config = (ROOT / "deploy" / "compose" / "multihome.yaml").read_text()
    gateways = [compose["services"][g]["environment"] for g in ("gw1", "gw2", "gw3")]
    _one_session_everywhere([_replica_key(config, env, monkeypatch) for env in gateways])
