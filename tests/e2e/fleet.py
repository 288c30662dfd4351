"""Every simulated cloud behind one real gateway with everything on: SQLite storage, the audit
trail, an OIDC issuer, managed keys, the bootstrap admin key, every log line at DEBUG in a file.

For tests that look at the gateway as a whole from outside (the schema fuzz runs, the no-secrets
sweep, the SSRF checks). Every credential is a recognisable fake (SECRETS) so a test can look for
it anywhere the gateway writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from builders import (
    api_keys,
    audit,
    breakers,
    config,
    deployment,
    embedding,
    groups,
    identity,
    oidc,
    price,
    simulated,
    sqlite,
)
from oidc_issuer import LocalIssuer  # tests/ is on sys.path (pytest rootdir insertion)

from .processes import DEBUG_ALL, Gateway, Simulator, Simulators

AKID = "AKIDMHFLEETSECRET01"
SECRETS = {
    "MH_FLEET_CLIENT_KEY": "mhsecret-client-key-6c1d0e",
    "MH_FLEET_ADMIN_KEY": "mhsecret-admin-key-93b7a2",
    "MH_FLEET_OPENAI_KEY": "mhsecret-openai-upstream-4e8f",
    "MH_FLEET_AZURE_KEY": "mhsecret-azure-upstream-a51c",
    "MH_FLEET_ANTHROPIC_KEY": "mhsecret-anthropic-upstream-2d9b",
    "MH_FLEET_GEMINI_KEY": "mhsecret-gemini-upstream-7f03",
    "MH_FLEET_AWS_SECRET": "mhsecret-aws-secret-access-key-58e6b1c9",
}
CLIENT_KEY, ADMIN_KEY = SECRETS["MH_FLEET_CLIENT_KEY"], SECRETS["MH_FLEET_ADMIN_KEY"]

# The key each simulator (by kind) requires, held in an environment variable; Bedrock checks SigV4.
KEY_ENV = {
    "openai": "MH_FLEET_OPENAI_KEY",
    "azure": "MH_FLEET_AZURE_KEY",
    "anthropic": "MH_FLEET_ANTHROPIC_KEY",
    "gemini": "MH_FLEET_GEMINI_KEY",
}


def fleet_config(tmp: Path, issuer: LocalIssuer, sims: dict[str, Simulator]) -> dict:
    """Every kind in `sims` behind one gateway, with storage, the audit trail, OIDC and the admin key."""
    providers = {kind: simulated(kind, sims[kind].url, key_env=env) for kind, env in KEY_ENV.items()}
    providers["bedrock"] = simulated(
        "bedrock", sims["bedrock"].url, region="us-east-1", auth={"aws": {"profile": "fleet"}}
    )
    return config(
        server=api_keys("MH_FLEET_CLIENT_KEY", max_body_bytes=1048576),
        storage=sqlite(tmp / "multihome.db", refresh_s=0.25),
        kms={"local": {"key_file": str(tmp / "kms.key")}},  # stored responses are sealed under it
        audit=audit(tmp / "audit"),
        identity=identity("MH_FLEET_ADMIN_KEY", oidc(issuer)),
        routing=breakers(0),
        providers=providers,
        deployments={
            "oa": deployment("openai", "gpt-4o-fleet", price=price(1, 2)),
            "az": deployment("azure", "gpt-4o-az"),
            "an": deployment("anthropic", "claude-fleet"),
            "br": deployment("bedrock", "anthropic.claude-3-5-haiku-20241022-v1:0"),
            "gm": deployment("gemini", "gemini-2.5-flash"),
            "oa-embed": embedding("openai", "embed-oa"),
            "br-titan": embedding("bedrock", "amazon.titan-embed-text-v2:0"),
            "gm-embed": embedding("gemini", "text-embedding-004"),
        },
        model_groups=groups(
            {
                "gpt-4o": ["oa", "az"],
                "claude": "an",
                "bedrock": "br",
                "gemini": "gm",
                "embed": "oa-embed",
                "titan": "br-titan",
                "gemini-embed": "gm-embed",
            },
            retries=0,
        ),
    )


CHAT_GROUPS = ["gpt-4o", "claude", "bedrock", "gemini"]
EMBEDDING_GROUPS = ["embed", "titan", "gemini-embed"]


@dataclass
class Fleet:
    tmp: Path
    gateway: Gateway
    sims: dict[str, Simulator]
    issuer: LocalIssuer
    secrets: dict[str, str] = field(default_factory=lambda: dict(SECRETS))

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def db(self) -> Path:
        return self.tmp / "multihome.db"

    @property
    def audit_dir(self) -> Path:
        return self.tmp / "audit"

    def log(self) -> str:
        return self.gateway.output()


@contextlib.contextmanager
def fleet(
    tmp: Path,
    *,
    extra_env: dict[str, str] | None = None,
    edit: Callable[[dict], object] | None = None,
    **sections: object,
):
    """Start everything; yields a Fleet. The gateway logs to `tmp/gateway.log` at DEBUG.
    `sections`: top-level config sections to add or replace; `edit`: changes the config (a dict) in
    place, after them (e.g. one provider's key taken from the admin API's store)."""
    creds = tmp / "aws-credentials"
    creds.write_text(f"[fleet]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRETS['MH_FLEET_AWS_SECRET']}\n")
    aws_env = {
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SESSION_TOKEN": "",
        "AWS_PROFILE": "",
        "MH_FLEET_AKID": AKID,
    }
    sims: dict[str, Simulator] = {}
    started = Simulators()
    issuer = LocalIssuer().start()
    gateway = None
    try:
        for kind, env in KEY_ENV.items():
            sims[kind] = started.start(kind, f"fleet-{kind}", key_env=env, env=SECRETS)
        sims["bedrock"] = started.start(
            "bedrock",
            "fleet-bedrock",
            aws_env=("MH_FLEET_AKID", "MH_FLEET_AWS_SECRET"),
            region="us-east-1",
            env={**SECRETS, **aws_env},
        )
        text = {**fleet_config(tmp, issuer, sims), **sections}
        if edit is not None:
            edit(text)
        gateway = Gateway(
            text,
            tmp,
            {**SECRETS, **aws_env, **(extra_env or {})},
            "--log-level",
            "debug",
            command=DEBUG_ALL,
            log=tmp / "gateway.log",
        )
        yield Fleet(tmp, gateway, sims, issuer)
    finally:
        if gateway is not None:
            gateway.stop()
        started.close()
        issuer.stop()
