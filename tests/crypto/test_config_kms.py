"""The `kms:` config section: default local, per-tenant overrides, errors with key paths."""

from __future__ import annotations

import pytest

from builders import open_door, single, yaml_text
from multihome.config import ConfigError, parse_config

BASE = yaml_text(single(server=open_door()))  # the kms sections below are the subject, as YAML


def test_default_is_local_with_a_key_file():
    kms = parse_config(BASE).kms
    assert kms.backend == "local" and kms.local.key_file and kms.key_id is None and kms.tenants == {}


def test_per_tenant_override():
    cfg = parse_config(
        BASE
        + """
kms:
  backend: vault
  vault: {address: "http://127.0.0.1:8200", token_env: VAULT_TOKEN}
  cache_ttl_s: 60
  tenants:
    acme: {backend: aws, key_id: "alias/acme", aws: {region: eu-west-1}}
"""
    ).kms
    assert cfg.backend == "vault" and cfg.vault.mount == "transit"
    assert cfg.tenants["acme"].backend == "aws" and cfg.tenants["acme"].aws.region == "eu-west-1"


def test_kms_timeout_s_defaults_and_tenants_inherit_it():
    from multihome.config.kms import bounded

    kms = parse_config(BASE).kms
    assert (bounded(kms, kms).timeout_s, bounded(kms, kms).attempts) == (5.0, 2)
    kms = parse_config(BASE + "kms: {timeout_s: 2, attempts: 3, tenants: {a: {}, b: {timeout_s: 9}}}").kms
    assert (bounded(kms, kms.tenants["a"]).timeout_s, bounded(kms, kms.tenants["a"]).attempts) == (2, 3)
    assert bounded(kms, kms.tenants["b"]).timeout_s == 9


@pytest.mark.parametrize(
    "section, problem",
    [
        ("kms: {backend: aws}", "kms.aws: required when kms.backend is aws"),
        ("kms: {backend: gcp}", "kms.backend: Invalid enum value 'gcp' (valid: aws, azure, local, vault)"),
        (
            "kms: {tenants: {acme: {backend: azure}}}",
            "kms.tenants.acme.azure: required when kms.tenants.acme.backend is azure",
        ),
        ("kms: {backend: azure, azure: {vault_url: 'http://kv'}}", "kms.azure.vault_url: must start with https://"),
        ("kms: {max_messages_per_key: 4294967296}", "kms.max_messages_per_key: at most 1073741824"),
        ("kms: {vault: {address: x, token: abc}}", "kms.vault: Object contains unknown field `token`"),
        ("kms: {cache_ttl_s: 0}", "kms.cache_ttl_s: Expected `float` > 0.0"),
        ("kms: {timeout_s: 0}", "kms.timeout_s: Expected `float` > 0.0"),
        ("kms: {timeout_s: 600}", "kms.timeout_s: at most 60"),
        ("kms: {attempts: 0}", "kms.attempts: Expected `int` >= 1"),
        ("kms: {tenants: {acme: {attempts: 9}}}", "kms.tenants.acme.attempts: at most 5"),
    ],
)
def test_problems_name_the_key_path(section, problem):
    with pytest.raises(ConfigError) as exc:
        parse_config(BASE + section)
    assert problem in str(exc.value)


def _doc_block(first_line: str) -> str:
    """The ```yaml block of docs/encryption.md that starts with `first_line`."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "encryption.md").read_text()
    blocks = [b for b in re.findall(r"^```yaml\n(.*?)^```$", doc, re.M | re.S) if b.startswith(first_line)]
    assert len(blocks) == 1, f"docs/encryption.md has no single ```yaml block starting {first_line!r}"
    return blocks[0]


def test_the_documented_kms_and_capture_sections_are_the_defaults():
    """docs/encryption.md shows the `kms:` and `capture:` sections with their defaults: written out, they
    make the same config as leaving them out (only the per-tenant examples differ)."""
    import msgspec

    from multihome.config.kms import bounded

    default = parse_config(BASE)
    kms = _doc_block("kms:\n  backend: local")
    kms = kms[: kms.index("  tenants:")]  # the example of a tenant's own key is not a default
    documented = parse_config(BASE + kms).kms
    # Unset, timeout_s and attempts are the organisation's for every tenant entry, else 5 s and 2 tries.
    assert (documented.timeout_s, documented.attempts) == (bounded(default.kms, default.kms).timeout_s, 2)
    documented = msgspec.structs.replace(documented, tenants={}, timeout_s=None, attempts=None)
    assert msgspec.to_builtins(documented) == msgspec.to_builtins(default.kms)
    capture = "\n".join(line for line in _doc_block("capture:").splitlines() if "tenants:" not in line)
    assert parse_config(BASE + capture + "\n").capture == default.capture
