"""Shared deployments and helpers for the policy tests."""

from __future__ import annotations

import datetime as dt

from multihome.policy import DeploymentFacts
from multihome.schema.principal import Principal

AZ_EU = DeploymentFacts("az-eu", "azure-eu", "azure", "westeurope", "EU")
AZ_US = DeploymentFacts("az-us", "azure-us", "azure", "eastus", "US")
BR_EU = DeploymentFacts("br-eu", "bedrock-eu", "bedrock", "eu-central-1", "EU")
BR_US = DeploymentFacts("br-us", "bedrock-us", "bedrock", "us-east-1", "US")
OAI = DeploymentFacts("oai", "openai", "openai")  # region and data zone not configured
ALL = (AZ_EU, AZ_US, BR_EU, BR_US, OAI)
NAMES = frozenset(d.name for d in ALL)
TODAY = dt.date(2026, 6, 15)


def principal(tenant="acme", team=None, key=None, models=None, endpoints=None) -> Principal:
    return Principal(
        tenant=tenant,
        subject=key or "user-1",
        source="api_key" if key else "static",
        team=team,
        key_id=key,
        scopes_models=frozenset(models) if models is not None else None,
        scopes_endpoints=frozenset(endpoints) if endpoints is not None else None,
    )
