"""Every simulated cloud behind one real gateway with everything on: SQLite storage, the audit
trail, an OIDC issuer, managed keys, the bootstrap admin key, every log line at DEBUG in a file.

For tests that look at the gateway as a whole from outside (the schema fuzz runs, the no-secrets
sweep, the SSRF checks). Every credential is a recognisable fake (SECRETS) so a test can look for
it anywhere the gateway writes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from oidc_issuer import LocalIssuer  # tests/ is on sys.path (pytest rootdir insertion)

from .processes import DEBUG_ALL, Gateway, Simulator

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

CONFIG = """
server: {{api_keys_env: [MH_FLEET_CLIENT_KEY], max_body_bytes: 1048576}}
storage: {{url: "sqlite+aiosqlite:///{tmp}/multihome.db", refresh_s: 0.25}}
audit: {{dir: "{tmp}/audit"}}
identity:
  admin_key_env: MH_FLEET_ADMIN_KEY
  oidc:
    - name: local
      issuer: "{issuer}"
      jwks_uri: "{jwks}"
      audiences: ["{audience}"]
      claims: {{tenant: tenant, roles: roles, role_map: {{ai-admins: tenant-admin}}}}
routing: {{breaker: {{consecutive_failures: 0}}}}
providers:
  openai: {{kind: openai, endpoint: "{openai}/v1", auth: {{api_key_env: MH_FLEET_OPENAI_KEY}}}}
  azure: {{kind: azure, endpoint: "{azure}", auth: {{api_key_env: MH_FLEET_AZURE_KEY}}}}
  anthropic: {{kind: anthropic, endpoint: "{anthropic}", auth: {{api_key_env: MH_FLEET_ANTHROPIC_KEY}}}}
  bedrock: {{kind: bedrock, endpoint: "{bedrock}", region: us-east-1, auth: {{aws: {{profile: fleet}}}}}}
  gemini: {{kind: gemini, endpoint: "{gemini}", auth: {{api_key_env: MH_FLEET_GEMINI_KEY}}}}
deployments:
  oa: {{provider: openai, model: gpt-4o-fleet, price: {{input: 1, output: 2}}}}
  az: {{provider: azure, model: gpt-4o-az}}
  an: {{provider: anthropic, model: claude-fleet}}
  br: {{provider: bedrock, model: "anthropic.claude-3-5-haiku-20241022-v1:0"}}
  gm: {{provider: gemini, model: gemini-2.5-flash}}
  oa-embed: {{provider: openai, model: embed-oa, capabilities: [embeddings]}}
  br-titan: {{provider: bedrock, model: "amazon.titan-embed-text-v2:0", capabilities: [embeddings]}}
  gm-embed: {{provider: gemini, model: text-embedding-004, capabilities: [embeddings]}}
model_groups:
  gpt-4o: {{deployments: [oa, az], retries: 0}}
  claude: {{deployments: [an], retries: 0}}
  bedrock: {{deployments: [br], retries: 0}}
  gemini: {{deployments: [gm], retries: 0}}
  embed: {{deployments: [oa-embed], retries: 0}}
  titan: {{deployments: [br-titan], retries: 0}}
  gemini-embed: {{deployments: [gm-embed], retries: 0}}
"""
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
def fleet(tmp: Path, *, extra_config: str = "", extra_env: dict[str, str] | None = None):
    """Start everything; yields a Fleet. The gateway logs to `tmp/gateway.log` at DEBUG."""
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
    issuer = LocalIssuer().start()
    gateway = None
    try:
        sims["openai"] = Simulator("openai", "fleet-openai", "--api-key-env", "MH_FLEET_OPENAI_KEY", env=SECRETS)
        sims["azure"] = Simulator("azure", "fleet-azure", "--api-key-env", "MH_FLEET_AZURE_KEY", env=SECRETS)
        sims["anthropic"] = Simulator(
            "anthropic", "fleet-anthropic", "--api-key-env", "MH_FLEET_ANTHROPIC_KEY", env=SECRETS
        )
        sims["bedrock"] = Simulator(
            "bedrock",
            "fleet-bedrock",
            "--region",
            "us-east-1",
            "--aws-access-key-id-env",
            "MH_FLEET_AKID",
            "--aws-secret-access-key-env",
            "MH_FLEET_AWS_SECRET",
            env={**SECRETS, **aws_env},
        )
        sims["gemini"] = Simulator("gemini", "fleet-gemini", "--api-key-env", "MH_FLEET_GEMINI_KEY", env=SECRETS)
        text = (
            CONFIG.format(
                tmp=tmp,
                issuer=issuer.issuer,
                jwks=issuer.jwks_uri,
                audience=issuer.audience,
                **{name: sim.url for name, sim in sims.items()},
            )
            + extra_config
        )
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
        for sim in sims.values():
            sim.stop()
        issuer.stop()
