"""Gateway configs for tests, built from parts, so that a test states only what is particular to it.

A config is the plain mapping a YAML file would hold; `config()` assembles one from sections and
`yaml_text()` renders it for `parse_config` or the `multihome serve` process (`typed()` does both).
The parts are small functions named after what they mean in a test: a provider of a kind reaching a
simulator, a deployment, a model group over deployments, storage on a SQLite file or a database URL
held in an environment variable, identity with an admin key, a key budget, an audit directory.

    config(
        providers={"oa": simulated("openai", sim.url)},
        deployments={"d": deployment("oa", "m", price=price(3, 15))},
        model_groups={"gpt-4o": group("d", retries=0)},
        server=api_keys("MH_TEST_CLIENT"),
        storage=sqlite(tmp / "mh.db"),
    )

Every part takes the config's own field names as keyword arguments for what it does not spell out,
so anything the config accepts can be said; a test whose subject is the YAML text itself (config
error messages, the documented examples) keeps that text inline instead.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from decimal import Decimal
from pathlib import PurePath
from typing import Any, Protocol

import yaml

from multihome.config import Config, parse_config

Section = dict[str, Any]

# An endpoint nothing listens on (the discard port): for configs whose upstream is never called.
NOWHERE = "http://127.0.0.1:9/v1"


# --- providers, deployments, model groups -------------------------------------------------------


def provider(kind: str, endpoint: str | None = None, *, key_env: str | None = None, **fields: Any) -> Section:
    """A provider of `kind` at `endpoint` (None: the kind's public default), with an API key read
    from `key_env` if given; other fields (region, data_zone, auth, ...) as the config names them."""
    out: Section = {"kind": kind}
    if endpoint is not None:
        out["endpoint"] = endpoint
    if key_env is not None:
        out["auth"] = {"api_key_env": key_env}
    return {**out, **fields}


def simulated(kind: str, url: str, *, key_env: str | None = None, **fields: Any) -> Section:
    """A provider of `kind` that reaches the simulator serving at `url` (an OpenAI-compatible one
    serves its API under /v1; the other kinds at their root, as the real clouds do)."""
    return provider(kind, f"{url}/v1" if kind == "openai" else url, key_env=key_env, **fields)


def deployment(provider: str, model: str, **fields: Any) -> Section:
    """A deployment of `model` on the provider named `provider` (capabilities, price, context_window, ...)."""
    return {"provider": provider, "model": model, **fields}


def group(*deployments: str, **fields: Any) -> Section:
    """A model group over the named deployments, in order (retries, fail_over_on, strategy, ...)."""
    return {"deployments": list(deployments), **fields}


def groups(over: dict[str, str | list[str]], **fields: Any) -> dict[str, Section]:
    """Model groups by name, each over its deployment (or list of deployments), all with `fields`."""
    return {name: group(*([d] if isinstance(d, str) else d), **fields) for name, d in over.items()}


def embedding(provider: str, model: str, **fields: Any) -> Section:
    """A deployment of an embeddings model."""
    return deployment(provider, model, capabilities=["embeddings"], **fields)


def price(input: float | Decimal | str, output: float | Decimal | str, **fields: Any) -> Section:
    """A deployment's price per million tokens."""
    return {"input": input, "output": output, **fields}


# --- the other sections ---------------------------------------------------------------------------


def api_keys(*envs: str, **fields: Any) -> Section:
    """`server:` accepting the static client keys held in these environment variables."""
    return {"api_keys_env": list(envs), **fields}


def open_door(**fields: Any) -> Section:
    """`server:` that lets calls in without a key (in-process tests that are not about identity)."""
    return {"allow_unauthenticated": True, **fields}


def sqlite(path: str | PurePath, **fields: Any) -> Section:
    """`storage:` on a SQLite file (refresh_s and the like as fields)."""
    return {"url": f"sqlite+aiosqlite:///{path}", **fields}


def database(url: str, **fields: Any) -> Section:
    """`storage:` at a database URL: a PostgreSQL database from `pg_server`, or any SQLAlchemy URL."""
    return {"url": url, **fields}


def database_env(env: str = "MH_TEST_DB", **fields: Any) -> Section:
    """`storage:` at the database URL held in `env` (replicas sharing one database, SQLite or PostgreSQL)."""
    return {"url_env": env, **fields}


class Issuer(Protocol):
    """An OIDC issuer under test (tests/oidc_issuer.py's LocalIssuer)."""

    def config_dict(self, **overrides: Any) -> dict[str, Any]: ...


def oidc(issuer: Issuer, name: str = "local", *, role_map: dict[str, str] | None = None, **fields: Any) -> Section:
    """One `identity.oidc` entry trusting `issuer` (its issuer URL, JWKS and audience), any
    algorithm the gateway accepts: tenant and roles from the token's `tenant` and `roles` claims,
    `ai-admins` mapped to tenant-admin unless `role_map` says otherwise."""
    claims = {"tenant": "tenant", "roles": "roles", "role_map": role_map or {"ai-admins": "tenant-admin"}}
    return issuer.config_dict(name=name, algorithms=None, claims=claims, **fields)


def identity(admin_key_env: str | None = None, *issuers: Section, **fields: Any) -> Section:
    """`identity:` with the bootstrap admin key held in `admin_key_env`, trusting these OIDC issuers."""
    out: Section = {}
    if admin_key_env is not None:
        out["admin_key_env"] = admin_key_env
    if issuers:
        out["oidc"] = list(issuers)
    return {**out, **fields}


def key_budget(key_env: str, amount: Decimal | str, *, period: str = "day", mode: str = "hard") -> Section:
    """A `metering.budgets` entry for the static client key held in `key_env`."""
    return {"scope": "key", "id": f"env:{key_env}", "amount": str(amount), "period": period, "mode": mode}


def audit(directory: str | PurePath, **fields: Any) -> Section:
    """`audit:` writing its trail into `directory` (signing key, checkpoint cadence as fields)."""
    return {"dir": str(directory), **fields}


def breakers(consecutive_failures: int, **fields: Any) -> Section:
    """`routing:` with this circuit breaker; 0 turns breakers off, so a test's failures do not
    carry over into the next test on a shared gateway."""
    return {"breaker": {"consecutive_failures": consecutive_failures, **fields}}


# --- whole configs ----------------------------------------------------------------------------------


def config(
    *,
    providers: dict[str, Section],
    deployments: dict[str, Section],
    model_groups: dict[str, Section],
    server: Section | None = None,
    **sections: Any,
) -> Section:
    """A whole config: these providers, deployments and model groups, `server:` (a client key or
    `open_door()`), and any other top-level sections (storage, identity, audit, metering, routing,
    contracts, kms, telemetry) by their names."""
    head = {"server": server} if server is not None else {}
    if "storage" in sections and "kms" not in sections:  # the default key file is in the working directory:
        sections["kms"] = {"local": {"key_file": _test_key_file()}}  # not the checkout's, shared by every test
    return {**head, **sections, "providers": providers, "deployments": deployments, "model_groups": model_groups}


_KEY_DIR: list[str] = []


def _test_key_file() -> str:
    """This test process's own local KMS key file (made by the first seal, as the gateway's default is)."""
    if not _KEY_DIR:
        _KEY_DIR.append(tempfile.mkdtemp(prefix="mh-test-kms-"))
        atexit.register(shutil.rmtree, _KEY_DIR[0], True)  # each run's: /tmp does not keep them
    return f"{_KEY_DIR[0]}/multihome-kms.key"


def single(
    upstream: Section | None = None,
    *,
    model: str = "m",
    names: tuple[str, str, str] = ("p", "d", "g"),
    deployment_fields: Section | None = None,
    group_fields: Section | None = None,
    **sections: Any,
) -> Section:
    """A config with one route: one provider (default: an OpenAI endpoint nothing listens on),
    one deployment of `model` on it and one model group over that deployment, named by `names`
    (provider, deployment, group); other sections as in `config()`."""
    p, d, g = names
    return config(
        providers={p: upstream if upstream is not None else provider("openai", NOWHERE)},
        deployments={d: deployment(p, model, **(deployment_fields or {}))},
        model_groups={g: group(d, **(group_fields or {}))},
        **sections,
    )


class _Dumper(yaml.SafeDumper):
    """YAML that reads back to the same values: decimals as plain numbers, paths as strings."""


def _decimal(dumper: yaml.SafeDumper, value: Decimal) -> yaml.ScalarNode:
    exponent = value.as_tuple().exponent
    whole = isinstance(exponent, int) and exponent >= 0  # written without a fraction: 1000, not 1.0
    tag = "tag:yaml.org,2002:int" if whole else "tag:yaml.org,2002:float"
    return dumper.represent_scalar(tag, format(value, "f"))


_Dumper.add_representer(Decimal, _decimal)
_Dumper.add_multi_representer(PurePath, lambda dumper, value: dumper.represent_str(str(value)))


def yaml_text(cfg: Section) -> str:
    """The config as the YAML text a config file would hold."""
    return yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def typed(cfg: Section) -> Config:
    """The typed config, through the same YAML text and parser the gateway uses."""
    return parse_config(yaml_text(cfg))
