"""The providers under test, declared as data, and the stack that serves them all.

Each `Target` is one upstream API: the simulator that speaks it, how the gateway reaches it with
good and with wrong credentials, the models it serves, and the scenarios it cannot do because of a
limitation of the provider itself (`gaps`, with the reason). `KNOWN_BUGS` lists gateway bugs that
make a scenario fail today: they run as strict xfails, so fixing one turns the run red until the
entry is removed. There is one `Target` per provider kind in `multihome.providers.registry`;
test_conformance.py fails when a registered kind has none, so adding a provider kind is one
more `Target` below (docs/adding-a-provider.md).

`Stack` starts one simulator per target plus one OpenAI simulator (the failover backup), a local
OAuth2 token endpoint for Vertex (Claude on Vertex uses its simulator's own), an AWS credentials file for Bedrock, and one gateway whose
config gives every target these model groups:

  <name>        its primary deployment alone (no failover: errors reach the client)
  <name>-fo     a second deployment on the same simulator (small context window), then the backup
  <name>-bad    the primary's simulator reached with wrong credentials
  <name>-embed  an embeddings deployment, when the provider has embeddings
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# pytest puts tests/ on sys.path for both packages (neither tests/ nor the rootdir is a package).
from builders import api_keys, breakers, config, deployment, embedding, group, simulated, sqlite
from e2e.processes import Gateway, Simulator

CLIENT_KEY = "mh-conformance-client-key"
SECRETS = {
    "CF_CLIENT_KEY": CLIENT_KEY,
    "CF_OPENAI_KEY": "cf-openai-secret-111",
    "CF_AZURE_KEY": "cf-azure-secret-222",
    "CF_ANTHROPIC_KEY": "cf-anthropic-secret-333",
    "CF_GEMINI_KEY": "cf-gemini-secret-444",
    "CF_VERTEX_TOKEN": "ya29.cf-vertex-token-555",
    "CF_AWS_AKID": "AKIDCONFORMANCE0001",
    "CF_AWS_SECRET": "cf-aws-secret-access-key-666",
    "CF_FOUNDRY_KEY": "cf-foundry-secret-777",
    "CF_INFERENCE_KEY": "cf-inference-secret-888",
    "CF_WRONG_KEY": "cf-not-the-right-key-000",
}
SA_EMAIL = "conformance@proj-1.iam.gserviceaccount.com"
BACKUP_NAME = "backup-sim"


# Both Bedrock kinds' simulators: us-east-1, checking SigV4 against the conformance key pair.
BEDROCK_SIM = (
    "--region",
    "us-east-1",
    "--aws-access-key-id-env",
    "CF_AWS_AKID",
    "--aws-secret-access-key-env",
    "CF_AWS_SECRET",
)


@dataclass(frozen=True)
class Target:
    name: str  # a provider kind (also its simulator's kind), its name in the matrix, its model groups' prefix
    sim_args: tuple[str, ...]  # simulator credentials (names of env vars in SECRETS)
    provider: str  # YAML flow mapping of the provider; {url} is the simulator's URL
    bad_provider: str  # the same provider with credentials the simulator rejects
    main_model: str
    fo_model: str
    embed_model: str | None = None
    gaps: dict[str, str] = field(default_factory=dict)  # scenario id -> the provider's limitation

    @property
    def sim_name(self) -> str:
        return f"{self.name}-sim"


TARGETS: list[Target] = [
    Target(
        "openai",
        ("--api-key-env", "CF_OPENAI_KEY"),
        '{{kind: openai, endpoint: "{url}/v1", auth: {{api_key_env: CF_OPENAI_KEY}}}}',
        '{{kind: openai, endpoint: "{url}/v1", auth: {{api_key_env: CF_WRONG_KEY}}}}',
        "gpt-4o-main",
        "gpt-4o-fo",
        "text-embedding-3-small",
    ),
    Target(
        "azure",
        ("--api-key-env", "CF_AZURE_KEY"),
        '{{kind: azure, endpoint: "{url}", auth: {{api_key_env: CF_AZURE_KEY}}}}',
        '{{kind: azure, endpoint: "{url}", auth: {{api_key_env: CF_WRONG_KEY}}}}',
        "gpt-4o-main",
        "gpt-4o-fo",
        "embed-small",
    ),
    Target(
        "anthropic",
        ("--api-key-env", "CF_ANTHROPIC_KEY"),
        '{{kind: anthropic, endpoint: "{url}", auth: {{api_key_env: CF_ANTHROPIC_KEY}}}}',
        '{{kind: anthropic, endpoint: "{url}", auth: {{api_key_env: CF_WRONG_KEY}}}}',
        "claude-sonnet-4-5",
        "claude-fo",
        gaps={"embeddings": "Anthropic has no embeddings API"},
    ),
    Target(
        "gemini",
        ("--api-key-env", "CF_GEMINI_KEY"),
        '{{kind: gemini, endpoint: "{url}", auth: {{api_key_env: CF_GEMINI_KEY}}}}',
        '{{kind: gemini, endpoint: "{url}", auth: {{api_key_env: CF_WRONG_KEY}}}}',
        "gemini-2.5-flash",
        "gemini-fo",
        "text-embedding-004",
        gaps={"image_https_url": "the Gemini API fetches only its own Files API URIs, not arbitrary https URLs"},
    ),
    Target(
        "vertex",
        ("--oauth-token-env", "CF_VERTEX_TOKEN", "--region", "us-central1"),
        '{{kind: vertex, endpoint: "{url}", region: us-central1, project: proj-1, '
        "auth: {{google: {{service_account_file_env: CF_SA_FILE}}}}}}",
        '{{kind: vertex, endpoint: "{url}", region: us-central1, project: proj-1, '
        "auth: {{google: {{service_account_file_env: CF_SA_BAD_FILE}}}}}}",
        "gemini-2.5-pro",
        "gemini-fo",
        "text-embedding-005",
    ),
    Target(
        "bedrock",
        BEDROCK_SIM,
        '{{kind: bedrock, endpoint: "{url}", region: us-east-1, auth: {{aws: {{profile: cf-good}}}}}}',
        '{{kind: bedrock, endpoint: "{url}", region: us-east-1, auth: {{aws: {{profile: cf-bad}}}}}}',
        "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "anthropic.claude-fo-v1:0",
        "cohere.embed-english-v3",
        gaps={"image_https_url": "Bedrock Converse takes image bytes only; it does not fetch URLs"},
    ),
    Target(
        "foundry_anthropic",
        ("--api-key-env", "CF_FOUNDRY_KEY"),
        '{{kind: foundry_anthropic, endpoint: "{url}", data_zone: US, auth: {{api_key_env: CF_FOUNDRY_KEY}}}}',
        '{{kind: foundry_anthropic, endpoint: "{url}", data_zone: US, auth: {{api_key_env: CF_WRONG_KEY}}}}',
        "claude-sonnet-4-5",
        "claude-fo",
        gaps={"embeddings": "Claude on Foundry is the Messages API only: Anthropic has no embeddings API"},
    ),
    Target(
        "vertex_anthropic",
        # The simulator's own token endpoint grants tokens to JWTs this key signs ({tmp}: the stack's directory).
        ("--region", "us-east5", "--google-public-key-file", "{tmp}/google-public.pem"),
        '{{kind: vertex_anthropic, endpoint: "{url}", region: us-east5, project: proj-1, '
        "auth: {{google: {{service_account_file_env: CF_VA_SA_FILE}}}}}}",
        '{{kind: vertex_anthropic, endpoint: "{url}", region: us-east5, project: proj-1, '
        "auth: {{google: {{service_account_file_env: CF_VA_SA_BAD_FILE}}}}}}",
        "claude-sonnet-4-5@20250929",
        "claude-fo@1",
        gaps={"embeddings": "Claude on Vertex is the Messages API only: Anthropic has no embeddings API"},
    ),
    Target(
        "bedrock_anthropic",
        BEDROCK_SIM,
        '{{kind: bedrock_anthropic, endpoint: "{url}", region: us-east-1, auth: {{aws: {{profile: cf-good}}}}}}',
        '{{kind: bedrock_anthropic, endpoint: "{url}", region: us-east-1, auth: {{aws: {{profile: cf-bad}}}}}}',
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "anthropic.claude-fo-v1:0",
        gaps={
            "embeddings": "Claude on Bedrock has no embeddings (the bedrock kind serves Titan and Cohere)",
            "image_https_url": "Bedrock hands Claude inline images only; it does not fetch URLs",
        },
    ),
    Target(
        "bedrock_openai",
        BEDROCK_SIM,
        '{{kind: bedrock_openai, endpoint: "{url}", region: us-east-1, auth: {{aws: {{profile: cf-good}}}}}}',
        '{{kind: bedrock_openai, endpoint: "{url}", region: us-east-1, auth: {{aws: {{profile: cf-bad}}}}}}',
        "openai.gpt-oss-120b-1:0",
        "openai.gpt-oss-fo",
        gaps={
            "embeddings": "Bedrock's OpenAI-compatible endpoint serves chat completions only",
            "image_data_url": "OpenAI's open-weight models on Bedrock take text only",
            "image_https_url": "OpenAI's open-weight models on Bedrock take text only",
            "responses_image": "OpenAI's open-weight models on Bedrock take text only",
        },
    ),
    Target(
        "azure_inference",
        ("--api-key-env", "CF_INFERENCE_KEY"),
        '{{kind: azure_inference, endpoint: "{url}/models", auth: {{api_key_env: CF_INFERENCE_KEY}}}}',
        '{{kind: azure_inference, endpoint: "{url}/models", auth: {{api_key_env: CF_WRONG_KEY}}}}',
        "Llama-3.3-70B-Instruct",
        "llama-fo",
        "Cohere-embed-v3-english",
    ),
]
TARGET_NAMES = [t.name for t in TARGETS]

# (provider, scenario id) -> what is wrong in the gateway today. Reported to the lead; not a gap.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def gateway_config(urls: dict[str, str], tmp: Path) -> dict:
    """Every target behind one gateway, with a SQLite store (the stored Responses scenario's state)."""
    providers = {"backup": simulated("openai", urls["backup"])}
    deployments = {"oa-backup": deployment("backup", "gpt-4o-backup", context_window=128000)}
    groups = {}
    fail_over_on = ["capacity", "unavailable", "refusal", "context_overflow"]
    for t in TARGETS:
        n = t.name
        providers[n] = yaml.safe_load(t.provider.format(url=urls[n]))
        providers[f"{n}-bad"] = yaml.safe_load(t.bad_provider.format(url=urls[n]))
        deployments[f"{n}-main"] = deployment(n, t.main_model)
        # A small window: a context overflow here fails over to the backup's larger one.
        deployments[f"{n}-fo"] = deployment(n, t.fo_model, context_window=8000)
        deployments[f"{n}-bad"] = deployment(f"{n}-bad", t.main_model)
        groups[n] = group(f"{n}-main", retries=0)
        groups[f"{n}-fo"] = group(f"{n}-fo", "oa-backup", retries=0, fail_over_on=fail_over_on)
        groups[f"{n}-bad"] = group(f"{n}-bad", retries=0)
        if t.embed_model:
            deployments[f"{n}-embed"] = embedding(n, t.embed_model)
            groups[f"{n}-embed"] = group(f"{n}-embed", retries=0)
    return config(
        server=api_keys("CF_CLIENT_KEY"),
        storage=sqlite(tmp / "conformance.db"),
        kms={"local": {"key_file": str(tmp / "kms.key")}},
        # Error scenarios decline on purpose; a breaker must not carry that into the next scenario.
        routing=breakers(0),
        providers=providers,
        deployments=deployments,
        model_groups=groups,
    )


class _TokenHandler(BaseHTTPRequestHandler):
    """Google's OAuth2 token endpoint for the JWT-bearer grant google-auth's service accounts use:
    it checks the assertion's signature against the one key it trusts."""

    server: TokenEndpoint

    def do_POST(self):
        form = parse_qs(self.rfile.read(int(self.headers["content-length"])).decode())
        try:
            # google-auth signs for Google's token audience, whatever token_uri points at.
            claims = jwt.decode(
                form["assertion"][0],
                self.server.public_key,
                algorithms=["RS256"],
                audience="https://oauth2.googleapis.com/token",
            )
        except (jwt.PyJWTError, KeyError):
            claims = None
        if claims is None or claims.get("iss") != SA_EMAIL:
            body, status = b'{"error":"invalid_grant","error_description":"Invalid JWT Signature."}', 400
        else:
            body = json.dumps(
                {"access_token": SECRETS["CF_VERTEX_TOKEN"], "expires_in": 3599, "token_type": "Bearer"}
            ).encode()
            status = 200
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class TokenEndpoint(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TokenHandler)
        self.trusted = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self.trusted.public_key()
        self.uri = f"http://127.0.0.1:{self.server_address[1]}/token"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def service_account(self, path: Path, trusted: bool, token_uri: str | None = None) -> Path:
        """A service-account JSON; an untrusted one is signed by a key the endpoint does not know.
        `token_uri`: another endpoint trusting the same key (the vertex_anthropic simulator's)."""
        key = self.trusted if trusted else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "proj-1",
                    "private_key_id": "k1",
                    "private_key": pem,
                    "client_email": SA_EMAIL,
                    "client_id": "1",
                    "token_uri": token_uri or self.uri,
                }
            )
        )
        return path


class Stack:
    """Every simulator, the token endpoint and one gateway, started together and stopped together."""

    def __init__(self, tmp: Path) -> None:
        self.sims: dict[str, Simulator] = {}
        self.tokens = TokenEndpoint()
        self.gateway: Gateway | None = None
        try:
            (tmp / "google-public.pem").write_bytes(
                self.tokens.public_key.public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
            with ThreadPoolExecutor(len(TARGETS) + 1) as pool:  # each start is a Python process boot
                jobs = {
                    t.name: pool.submit(
                        Simulator, t.name, t.sim_name, *(a.format(tmp=tmp) for a in t.sim_args), env=SECRETS
                    )
                    for t in TARGETS
                }
                jobs["backup"] = pool.submit(Simulator, "openai", BACKUP_NAME)
                for name, job in jobs.items():
                    self.sims[name] = job.result()
            va_token_uri = self.sims["vertex_anthropic"].url + "/token"
            creds = tmp / "aws-credentials"
            creds.write_text(
                f"[cf-good]\naws_access_key_id = {SECRETS['CF_AWS_AKID']}\naws_secret_access_key = {SECRETS['CF_AWS_SECRET']}\n"
                f"[cf-bad]\naws_access_key_id = {SECRETS['CF_AWS_AKID']}\naws_secret_access_key = {SECRETS['CF_WRONG_KEY']}\n"
            )
            env = {
                **SECRETS,
                "CF_SA_FILE": str(self.tokens.service_account(tmp / "sa.json", trusted=True)),
                "CF_SA_BAD_FILE": str(self.tokens.service_account(tmp / "sa-bad.json", trusted=False)),
                "CF_VA_SA_FILE": str(self.tokens.service_account(tmp / "va.json", True, va_token_uri)),
                "CF_VA_SA_BAD_FILE": str(self.tokens.service_account(tmp / "va-bad.json", False, va_token_uri)),
                # Bedrock: botocore's chain reads only this file (no ambient AWS identity, no IMDS).
                "AWS_SHARED_CREDENTIALS_FILE": str(creds),
                "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_ACCESS_KEY_ID": "",
                "AWS_SECRET_ACCESS_KEY": "",
                "AWS_SESSION_TOKEN": "",
                "AWS_PROFILE": "",
            }
            self.gateway = Gateway(gateway_config({n: s.url for n, s in self.sims.items()}, tmp), tmp, env)
        except BaseException:
            self.close()
            raise

    def close(self) -> str:
        log = self.gateway.stop() if self.gateway else ""
        for sim in self.sims.values():
            sim.stop()
        self.tokens.shutdown()
        self.tokens.server_close()
        return log
