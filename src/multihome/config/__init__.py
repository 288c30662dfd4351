"""Multihome's configuration: the YAML file turned into typed structs, validated once at load.

Import-light on purpose: every other package reads its section from here, so this package
imports nothing of the project beyond three leaf modules (`schema.admin_fields` for bounded text,
`schema.principal` for role names, `providers.registry` for the provider kinds: descriptors that
are plain data, see providers/kind.py). An import contract in CI keeps it so (pyproject.toml).

- `model`: the `Config` struct and one struct per section (`audit`, `metering`, `contracts`,
  `oidc` hold the larger sections).
- `load`: `load_config` / `parse_config`, reporting every problem at once with its key path.
- `env`: the environment variables a config names, and reading secrets from them.
"""

from .env import env_secret, named_env_vars
from .errors import ConfigError
from .load import check_drain_timeout, load_config, parse_config
from .model import (
    CAPABILITIES,
    DECLINES,
    DEFAULT_CHAT_CAPS,
    PROVIDER_KINDS,
    STRATEGIES,
    AwsAuth,
    Breaker,
    Config,
    Deployment,
    EntraAuth,
    GoogleAuth,
    HealthProbe,
    Identity,
    ModelGroup,
    Price,
    Provider,
    ProviderAuth,
    Routing,
    Server,
    Storage,
    Telemetry,
    Timeouts,
)

__all__ = [
    "CAPABILITIES",
    "DECLINES",
    "DEFAULT_CHAT_CAPS",
    "PROVIDER_KINDS",
    "STRATEGIES",
    "AwsAuth",
    "Breaker",
    "Config",
    "ConfigError",
    "Deployment",
    "EntraAuth",
    "GoogleAuth",
    "HealthProbe",
    "Identity",
    "ModelGroup",
    "Price",
    "Provider",
    "ProviderAuth",
    "Routing",
    "Server",
    "Storage",
    "Telemetry",
    "Timeouts",
    "check_drain_timeout",
    "env_secret",
    "load_config",
    "named_env_vars",
    "parse_config",
]
