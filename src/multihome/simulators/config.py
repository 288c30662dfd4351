"""Simulator configuration: one plain dataclass, no file format of its own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .kinds import KINDS


@dataclass
class SimulatorConfig:
    kind: str = "openai"  # one of kinds.KINDS
    name: str = "sim"
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port
    # openai kind: required `Authorization: Bearer <api_key>` when set.
    # azure kind: required `api-key: <api_key>` when set (a bearer token is the alternative).
    api_key: str | None = None
    # azure, foundry_anthropic kinds: when set, a bearer token must equal it; otherwise any non-empty
    # token passes. foundry_anthropic: api_key is the Azure key, in x-api-key or api-key.
    entra_token: str | None = None
    region: str = "eastus"
    # bedrock kind: SigV4 signatures are verified against this key pair.
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    # vertex, vertex_anthropic kinds: the OAuth bearer token to accept (any non-empty token when unset,
    # unless vertex_anthropic's token endpoint has issued tokens or a key is set below).
    oauth_token: str | None = None
    # vertex_anthropic kind: the PEM public key whose private key signs the service account's JWT
    # assertions at POST /token (any well-formed assertion is granted when unset).
    google_public_key: str | None = None
    # Known models (openai) / deployments (azure). A list of names, or a mapping
    # deployment -> underlying model name reported in responses. None = accept any name.
    deployments: Sequence[str] | Mapping[str, str] | None = None
    embedding_dimensions: int = 8  # default vector length when the request has no `dimensions`
    log_size: int = 1000  # request-log ring buffer length
    cache_size: int = 4096  # cached reply bytes for identical request bodies

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")

    def deployment_map(self) -> dict[str, str] | None:
        if self.deployments is None:
            return None
        if isinstance(self.deployments, Mapping):
            return dict(self.deployments)
        return {d: d for d in self.deployments}
