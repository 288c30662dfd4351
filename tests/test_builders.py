"""tests/builders.py renders configs that read back to what was built, and that the gateway accepts."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import yaml

from builders import (
    api_keys,
    config,
    deployment,
    embedding,
    group,
    groups,
    key_budget,
    price,
    simulated,
    single,
    sqlite,
    typed,
    yaml_text,
)


def test_yaml_reads_back_to_the_same_values() -> None:
    cfg = config(
        providers={
            "oa": simulated("openai", "http://127.0.0.1:1", key_env="K"),
            "an": simulated("anthropic", "http://x"),
        },
        deployments={"d": deployment("oa", "m", price=price(Decimal("0.15"), Decimal(1000)))},
        model_groups={"g": group("d", retries=0)},
        server=api_keys("C"),
        storage=sqlite(Path("/tmp/x.db")),
        metering={"budgets": [key_budget("C", Decimal("0.50"))]},
        contracts={"commitments": [{"id": "c", "provider": "oa", "amount": "10", "starts_on": dt.date(2026, 1, 1)}]},
    )
    back = yaml.safe_load(yaml_text(cfg))
    assert back["providers"]["oa"] == {
        "kind": "openai",
        "endpoint": "http://127.0.0.1:1/v1",
        "auth": {"api_key_env": "K"},
    }
    assert back["providers"]["an"]["endpoint"] == "http://x"
    assert back["deployments"]["d"]["price"] == {"input": 0.15, "output": 1000}
    assert yaml.safe_load(yaml_text({"a": Decimal("1.0"), "b": Decimal("1E+3")})) == {"a": 1.0, "b": 1000}
    assert back["storage"] == {"url": "sqlite+aiosqlite:////tmp/x.db"}
    assert back["metering"]["budgets"][0]["amount"] == "0.50"  # a money string stays a string
    assert back["contracts"]["commitments"][0]["starts_on"] == dt.date(2026, 1, 1)
    # with storage and no kms section: the test process's own key file (test below)
    assert back["kms"]["local"]["key_file"].endswith("/multihome-kms.key")
    sections = ["server", "storage", "metering", "contracts", "kms", "providers", "deployments", "model_groups"]
    assert list(back) == sections


def test_groups_share_their_fields_and_embeddings_say_so() -> None:
    assert groups({"a": "d1", "b": ["d1", "d2"]}, retries=0) == {
        "a": {"deployments": ["d1"], "retries": 0},
        "b": {"deployments": ["d1", "d2"], "retries": 0},
    }
    assert embedding("p", "e") == {"provider": "p", "model": "e", "capabilities": ["embeddings"]}


def test_a_single_route_config_is_a_valid_gateway_config() -> None:
    cfg = typed(single(server=api_keys("K"), group_fields={"retries": 0}))
    assert list(cfg.model_groups) == ["g"] and cfg.model_groups["g"].deployments == ["d"]
    assert cfg.deployments["d"].provider == "p" and cfg.server.api_keys_env == ["K"]


def test_a_storage_configs_key_file_is_the_test_processs_own_and_goes_when_it_ends() -> None:
    """A config with storage and no kms section gets a local key file in a directory of the test process's
    own (not the checkout's default file), removed when the process ends (each run's were left in /tmp)."""
    script = (
        "import builders, pathlib\n"
        "cfg = builders.config(providers={}, deployments={}, model_groups={}, storage={'url': 'sqlite:///x.db'})\n"
        "key = pathlib.Path(cfg['kms']['local']['key_file'])\n"
        "key.write_text('k')\n"
        "print(key.parent)\n"
    )
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent / "src"), str(tests)])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert folder.name.startswith("mh-test-kms-"), done.stdout
    assert not folder.exists()
