"""Config validation: every error names the key path and says what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multihome.accounting.record import Usage
from multihome.config import ConfigError, load_config, parse_config
from multihome.config.decimals import SPELLING
from multihome.metering.prices import DeploymentPrice

ROOT = Path(__file__).resolve().parent.parent

BASE = """
server: {api_keys_env: [K]}
providers:
  az: {kind: azure, endpoint: "https://x.openai.azure.com"}
deployments:
  d1: {provider: az, model: gpt-4o-prod}
model_groups:
  gpt-4o: {deployments: [d1]}
"""


def test_example_config_is_valid():
    config = load_config(ROOT / "examples/gateway.yaml")
    assert config.model_groups["gpt-4o"].deployments == ["gpt-4o@azure", "gpt-4o@openai"]
    assert config.providers["openai"].auth.api_key_env == "OPENAI_UPSTREAM_KEY"


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("kind: azure", "kind: bedrockish", "providers.az.kind: Invalid enum value 'bedrockish'"),
        (
            'endpoint: "https://x.openai.azure.com"',
            'endpoint: "x.openai.azure.com"',
            "providers.az.endpoint: must start with http",
        ),
        (
            "model: gpt-4o-prod}",
            "model: gpt-4o-prod, context_window: big}",
            "deployments.d1.context_window: Expected `int | null`, got `str`",
        ),
        (
            "model: gpt-4o-prod}",
            "model: gpt-4o-prod, colour: red}",
            "deployments.d1: Object contains unknown field `colour`",
        ),
        ("provider: az,", "provider: nope,", "deployments.d1.provider: unknown provider 'nope' (known: az)"),
        ("deployments: [d1]", "deployments: [d1, d2]", "model_groups.gpt-4o.deployments[1]: unknown deployment 'd2'"),
        ("deployments: [d1]", "deployments: []", "model_groups.gpt-4o.deployments: list at least one deployment"),
        (
            "deployments: [d1]",
            "deployments: [d1], fail_over_on: [sometimes]",
            "model_groups.gpt-4o.fail_over_on[0]: unknown decline 'sometimes'",
        ),
        (
            "model: gpt-4o-prod}",
            "model: gpt-4o-prod, capabilities: [telepathy]}",
            "deployments.d1.capabilities[0]: unknown capability 'telepathy'",
        ),
        (
            "model: gpt-4o-prod}",
            "model: gpt-4o-prod, price: {input: 1, output: 2, tiers: {auto: {input: 1, output: 2}}}}",
            "deployments.d1.price.tiers.auto: unknown service tier (known: flex, scale, priority",
        ),
        (
            "model: gpt-4o-prod}",
            "model: gpt-4o-prod, price: {input: 1, output: 2, tiers: {priority: {input: -1}}}}",
            "deployments.d1.price.tiers[...].input: Expected `float` >= 0.0",
        ),
        ("server: {api_keys_env: [K]}", "server: {}", "server.api_keys_env: name at least one environment variable"),
        (
            "server: {api_keys_env: [K]}",
            "server: {api_keys_env: [K], max_header_bytes: 100}",
            "server.max_header_bytes: Expected `int` >= 1024",
        ),
        (
            "server: {api_keys_env: [K]}",
            "server: {api_keys_env: [K], upstream_threads: 0}",
            "server.upstream_threads: Expected `int` >= 1",
        ),
        (
            "server: {api_keys_env: [K]}",
            "server: {api_keys_env: [K], upstream_threads: 100000}",
            "server.upstream_threads: Expected `int` <= 64",
        ),
        ("server: {api_keys_env: [K]}", "server: {api_keys_env: [K]}\nroutes: {}", "routes: unknown top-level key"),
        (
            "deployments: [d1]}",
            "deployments: [d1], strategy: cheapest}",
            "model_groups.gpt-4o.strategy: Invalid enum value 'cheapest'",
        ),
        (
            "deployments: [d1]}",
            "deployments: [d1], fallback_groups: [claude]}",
            "model_groups.gpt-4o.fallback_groups[0]: unknown model group 'claude'",
        ),
    ],
)
def test_errors_name_the_path(old, new, message):
    assert old in BASE
    with pytest.raises(ConfigError) as info:
        parse_config(BASE.replace(old, new))
    assert message in str(info.value)


@pytest.mark.parametrize("kind", ["anthropic", "gemini", "bedrock"])
def test_tier_prices_on_a_kind_that_takes_no_service_tier_are_refused(kind):
    # Its translation drops service_tier: every call runs at the standard tier, charged at the price itself.
    text = BASE.replace(
        'az: {kind: azure, endpoint: "https://x.openai.azure.com"}', f"az: {{kind: {kind}, region: us-east-1}}"
    )
    ok = text.replace("model: gpt-4o-prod}", "model: m, price: {input: 1, output: 2}}")
    assert parse_config(ok).deployments["d1"].price is not None
    with pytest.raises(ConfigError) as info:
        parse_config(
            text.replace(
                "model: gpt-4o-prod}",
                "model: m, price: {input: 1, output: 2, tiers: {priority: {input: 2, output: 4}}}}",
            )
        )
    assert "deployments.d1.price.tiers: " in str(info.value) and "takes no service_tier" in str(info.value)
    # A kind that sends the field on keeps its tier prices.
    parse_config(
        BASE.replace(
            "model: gpt-4o-prod}", "model: m, price: {input: 1, output: 2, tiers: {priority: {input: 2, output: 4}}}}"
        )
    )


@pytest.mark.parametrize(
    "field, message",
    [
        ("price: {input: -3, output: -15}", "deployments.d1.price.input: Expected `float` >= 0.0"),
        ("price: {input: 3, output: -15}", "deployments.d1.price.output: Expected `float` >= 0.0"),
        (
            "price: {input: 3, output: 15, cached_input: -1}",
            "deployments.d1.price.cached_input: Expected `float` >= 0.0",
        ),
        ("price: {input: 1.0e+12, output: 15}", "deployments.d1.price.input: Expected `float` <= 1000000.0"),
        ("context_window: -5", "deployments.d1.context_window: Expected `int` >= 1"),
        ("context_window: 0", "deployments.d1.context_window: Expected `int` >= 1"),
        ("max_output_tokens: -1", "deployments.d1.max_output_tokens: Expected `int` >= 1"),
    ],
)
def test_impossible_deployment_numbers_are_refused(field, message):
    with pytest.raises(ConfigError) as info:
        parse_config(BASE.replace("model: gpt-4o-prod}", f"model: gpt-4o-prod, {field}}}"))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "group, message",
    [
        ("retries: -1", "model_groups.gpt-4o.retries: Expected `int` >= 0"),
        ("backoff_ms: -100", "model_groups.gpt-4o.backoff_ms: Expected `int` >= 0"),
        ("timeouts: {total_s: 0}", "model_groups.gpt-4o.timeouts.total_s: Expected `float` > 0.0"),
        ("hedge_after_ms: -5", "model_groups.gpt-4o.hedge_after_ms: Expected `int` >= 0"),
        ("weights: {d1: -1}", "model_groups.gpt-4o.weights.d1: must not be negative"),
    ],
)
def test_impossible_group_numbers_are_refused(group, message):
    with pytest.raises(ConfigError) as info:
        parse_config(BASE.replace("deployments: [d1]}", f"deployments: [d1], {group}}}"))
    assert message in str(info.value)


@settings(max_examples=200, deadline=None)
@given(
    price_in=st.floats(allow_nan=True, allow_infinity=True),
    price_out=st.floats(allow_nan=True, allow_infinity=True),
    tokens_in=st.integers(0, 10**7),
    tokens_out=st.integers(0, 10**7),
)
def test_no_accepted_price_gives_a_negative_cost(price_in, price_out, tokens_in, tokens_out):
    text = BASE.replace(
        "model: gpt-4o-prod}", f"model: gpt-4o-prod, price: {{input: {price_in!r}, output: {price_out!r}}}}}"
    )
    text = text.replace("nan", ".nan").replace("inf", ".inf")
    try:
        config = parse_config(text)
    except ConfigError:
        return
    price = config.deployments["d1"].price
    cost = DeploymentPrice.of(price.input, price.output, None, price.currency).cost(Usage(tokens_in, tokens_out))
    assert cost >= 0


def test_secrets_are_never_values_in_the_file():
    text = BASE.replace(
        'endpoint: "https://x.openai.azure.com"}', 'endpoint: "https://x.openai.azure.com", auth: {api_key: sk-123}}'
    )
    with pytest.raises(ConfigError, match=r"providers.az.auth: Object contains unknown field `api_key`"):
        parse_config(text)


def test_not_yaml_and_missing_sections():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("providers: [unclosed")
    with pytest.raises(ConfigError, match="deployments: required"):
        parse_config("providers: {}\nmodel_groups: {}")


def test_config_check_cli(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    out = subprocess.run(
        [sys.executable, "-m", "multihome.cli", "config", "check", str(good)], capture_output=True, text=True
    )
    assert out.returncode == 0 and "gpt-4o: d1" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("[d1]", "[d9]"))
    out = subprocess.run(
        [sys.executable, "-m", "multihome.cli", "config", "check", str(bad)], capture_output=True, text=True
    )
    assert out.returncode == 1 and "model_groups.gpt-4o.deployments[0]: unknown deployment 'd9'" in out.stderr


def test_every_problem_is_reported_at_once():
    text = BASE.replace("kind: azure", "kind: azurre").replace(
        "model: gpt-4o-prod}", "model: gpt-4o-prod, price: {input: -1}}"
    )
    text = text.replace("deployments: [d1]}", "deployments: [d1, d2]}") + "routes: {}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.problems == [
        "routes: unknown top-level key (known: server, routing, storage, identity, metering, audit, contracts, kms, capture, metrics, console, "
        "responses, egress, memory, telemetry, providers, deployments, model_groups)",
        "providers.az.kind: Invalid enum value 'azurre' (valid: anthropic, azure, azure_inference, bedrock, bedrock_anthropic, bedrock_openai, foundry_anthropic, gemini, openai, vertex, vertex_anthropic)",
        "deployments.d1.price.input: Expected `float` >= 0.0",
        "model_groups.gpt-4o.deployments[1]: unknown deployment 'd2'",
    ]


def test_enum_errors_list_the_valid_values_deep_in_a_section():
    with pytest.raises(
        ConfigError, match=r"metering.budgets\[0\].period: Invalid enum value 'week' \(valid: day, month, total\)"
    ):
        parse_config(BASE + "metering: {budgets: [{scope: tenant, id: '*', amount: 1, period: week}]}\n")


def test_a_key_written_twice_is_refused():
    twice = BASE.replace(
        "  d1: {provider: az, model: gpt-4o-prod}",
        "  d1: {provider: az, model: gpt-4o-prod}\n  d1: {provider: az, model: other}",
    )
    with pytest.raises(ConfigError, match=r"key 'd1' appears twice in one mapping \(first on line 6\)"):
        parse_config(twice)
    with pytest.raises(ConfigError, match="key 'model' appears twice"):
        parse_config(BASE.replace("model: gpt-4o-prod}", "model: gpt-4o-prod, model: x}"))


def test_config_check_reports_all_problems_and_unset_variables(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("[d1]", "[d9]").replace("kind: azure", "kind: azurre"))
    out = subprocess.run(
        [sys.executable, "-m", "multihome.cli", "config", "check", str(bad)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "invalid: providers.az.kind: Invalid enum value 'azurre' (valid: anthropic, azure, azure_inference, bedrock, bedrock_anthropic, bedrock_openai, foundry_anthropic, gemini, openai, vertex, vertex_anthropic)",
        "invalid: model_groups.gpt-4o.deployments[0]: unknown deployment 'd9'",
    ]
    good = tmp_path / "good.yaml"
    good.write_text(BASE.replace("[K]", "[MH_TEST_SET, MH_TEST_UNSET]"))
    env = {**os.environ, "MH_TEST_SET": "x"}
    env.pop("MH_TEST_UNSET", None)
    out = subprocess.run(
        [sys.executable, "-m", "multihome.cli", "config", "check", str(good)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0
    assert out.stderr.splitlines() == [
        "warning: server.api_keys_env[1]: environment variable MH_TEST_UNSET is not set here; serve needs it"
    ]


def test_admin_command_without_a_key_names_the_admin_variable():
    env = {k: v for k, v in os.environ.items() if k != "MULTIHOME_ADMIN_KEY"}
    out = subprocess.run(
        [sys.executable, "-m", "multihome.cli", "tenants", "list"], capture_output=True, text=True, env=env
    )
    assert out.returncode != 0 and "set MULTIHOME_ADMIN_KEY (or pass --key)" in out.stderr
    assert "OPENAI_API_KEY" not in out.stderr


@pytest.mark.parametrize("value", ["-1", "3601", ".nan", ".inf"])
def test_drain_timeout_is_a_bounded_number_of_seconds(value):
    assert parse_config(BASE).server.drain_timeout_s == 5.0
    assert (
        parse_config(
            BASE.replace("{api_keys_env: [K]}", "{api_keys_env: [K], drain_timeout_s: 0}")
        ).server.drain_timeout_s
        == 0
    )
    with pytest.raises(ConfigError, match=r"server.drain_timeout_s: must be a number of seconds from 0 .* to 3600"):
        parse_config(BASE.replace("{api_keys_env: [K]}", f"{{api_keys_env: [K], drain_timeout_s: {value}}}"))


def test_drain_timeout_flag_is_checked_like_the_config(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    out = subprocess.run(
        [sys.executable, "-m", "multihome.cli", "serve", "-c", str(good), "--drain-timeout", "-2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--drain-timeout: must be a number of seconds from 0" in out.stderr


def test_responses_section_has_defaults_and_bounded_values():
    cfg = parse_config(BASE).responses
    assert cfg.background.lease_s == 30.0 and cfg.retention.ttl_s == 30 * 86400 and cfg.retention.tenants == {}
    text = BASE + "responses: {background: {concurrency: 2}, retention: {ttl_s: null, tenants: {ten_a: 60}}}\n"
    cfg = parse_config(text).responses
    assert cfg.background.concurrency == 2 and cfg.retention.ttl_s is None and cfg.retention.tenants == {"ten_a": 60}
    with pytest.raises(ConfigError, match=r"responses.background.lease_s"):
        parse_config(BASE + "responses: {background: {lease_s: 0}}\n")
    with pytest.raises(ConfigError, match=r"responses.retention.tenants"):
        parse_config(BASE + "responses: {retention: {tenants: {ten_a: -5}}}\n")
    with pytest.raises(ConfigError, match=r"responses.retention"):
        parse_config(BASE + "responses: {retention: {ttl: 5}}\n")


def test_agent_limits_and_the_replica_id_variable():
    cfg = parse_config(BASE).responses
    assert (cfg.agent.max_steps, cfg.agent.max_tool_calls, cfg.agent.max_spend) == (10, 50, None)
    assert cfg.background.replica_id_env is None
    text = BASE + "responses: {agent: {max_steps: 4, max_spend: 0.5}, background: {replica_id_env: POD_NAME}}\n"
    cfg = parse_config(text).responses
    assert cfg.agent.max_steps == 4 and cfg.agent.max_spend == 0.5 and cfg.background.replica_id_env == "POD_NAME"
    for bad in ("max_steps: 0", "max_tool_calls: -1", "max_run_s: 0", "max_spend: 0"):
        with pytest.raises(ConfigError, match=r"responses.agent"):
            parse_config(BASE + f"responses: {{agent: {{{bad}}}}}\n")


def test_memory_embeddings_name_a_group_of_embedding_deployments():
    assert parse_config(BASE).memory.embeddings.model is None  # the offline model by default
    routed = BASE.replace(
        "  d1: {provider: az, model: gpt-4o-prod}\n",
        "  d1: {provider: az, model: gpt-4o-prod}\n  e1: {provider: az, model: te3, capabilities: [embeddings]}\n",
    ).replace("  gpt-4o: {deployments: [d1]}\n", "  gpt-4o: {deployments: [d1]}\n  emb: {deployments: [e1]}\n")
    cfg = parse_config(routed + "memory: {embeddings: {model: emb, dimensions: 512, matryoshka: true}}\n")
    assert (cfg.memory.embeddings.model, cfg.memory.embeddings.dimensions) == ("emb", 512)
    with pytest.raises(ConfigError, match=r"memory.embeddings.model: unknown model group 'nope'"):
        parse_config(routed + "memory: {embeddings: {model: nope}}\n")
    with pytest.raises(ConfigError, match=r"memory.embeddings.model: .*without the embeddings capability \(d1\)"):
        parse_config(routed + "memory: {embeddings: {model: gpt-4o}}\n")
    with pytest.raises(ConfigError, match=r"memory.embeddings.dimensions"):
        parse_config(routed + "memory: {embeddings: {model: emb, dimensions: 4}}\n")
    assert parse_config(routed + "memory: {embeddings: {model: emb, max_batch: 1}}\n").memory.embeddings.max_batch == 1
    with pytest.raises(ConfigError, match=r"memory.embeddings.max_batch"):
        parse_config(routed + "memory: {embeddings: {model: emb, max_batch: 0}}\n")
    with pytest.raises(ConfigError, match=r"memory.embeddings: dimensions, matryoshka and max_batch are for a routed"):
        parse_config(BASE + "memory: {embeddings: {dimensions: 512}}\n")
    with pytest.raises(ConfigError, match=r"memory.embeddings"):
        parse_config(routed + "memory: {embeddings: {model: emb, dims: 5}}\n")


@pytest.mark.parametrize(
    "audit, error",
    [
        ("{dir: /tmp/a, sync: sometimes}", r"audit.sync: Invalid enum value 'sometimes' \(valid: answer, interval\)"),
        ("{dir: /tmp/a, sync_interval_ms: 0}", r"audit.sync_interval_ms: Expected `float` > 0.0"),
        ("{dir: /tmp/a, sync_interval_ms: 5000}", r"audit.sync_interval_ms: Expected `float` <= 1000.0"),
    ],
)
def test_audit_sync_settings_are_checked(audit, error):
    with pytest.raises(ConfigError, match=error):
        parse_config(BASE + f"audit: {audit}\n")
    assert parse_config(BASE + "audit: {dir: /tmp/a}\n").audit.sync == "interval"  # the documented default


def test_the_defaults_the_operator_docs_promise():
    """The defaults docs/serving.md, api.md, deploy.md, metrics.md, console.md, storage.md, metering.md and
    telemetry.md give, for a config that leaves each section out: a default changed in code but not in
    the docs (or the other way round) fails here."""
    c = parse_config(BASE + 'storage: {url: "sqlite+aiosqlite:///x.db"}\ntelemetry: {otlp_endpoint: "http://c:4318"}\n')
    s = c.server
    assert (s.host, s.port) == ("127.0.0.1", 4000)  # serving.md, api.md
    assert s.drain_timeout_s == 5  # serving.md "(default 5 s)"
    assert s.client_idle_timeout_s == 30  # serving.md
    assert s.upstream_threads == 1  # serving.md
    assert s.max_body_bytes == 20 * 1024 * 1024  # README "default 20 MiB"
    assert s.max_header_bytes == 64 * 1024  # README "default 64 KiB"
    assert s.log_format == "text" and s.call_log is None  # metrics.md "The default stays text"
    m = c.metrics
    assert (m.enabled, m.access, m.publish_interval_s, m.headroom) == (False, "loopback", 5, True)  # metrics.md
    k = c.console
    assert (k.enabled, k.session_ttl_s, k.secure_cookie, k.oidc) == (True, 28800, False, None)  # console.md
    assert c.storage is not None and c.storage.refresh_s == 0.25 and c.storage.state_sync == "full"  # storage.md
    assert c.providers["az"].max_connections == 2048  # deploy.md "Open streams"
    assert c.metering.fail_open is True and c.metering.writer.max_backlog_s == 10  # deploy.md, serving.md
    t = c.telemetry
    assert t is not None
    assert (t.service_name, t.sample_ratio, t.export_timeout_s, t.metrics, t.metrics_interval_s) == (
        "multihome",
        1.0,
        10,
        True,
        60,
    )  # telemetry.md
    assert (t.batch_delay_ms, t.max_queue, t.shutdown_timeout_s) == (1000, 8192, 5)
    bare = parse_config(BASE)
    assert bare.telemetry is None and bare.storage.url is None and bare.storage.url_env is None  # both off


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("'Infinity'", f"must be {SPELLING}, not 'Infinity'"),  # was accepted, then every call answered 500
        (".inf", f"must be {SPELLING}, not 'inf'"),
        ("'NaN'", f"must be {SPELLING}, not 'NaN'"),
        ("'0_5'", f"must be {SPELLING}, not '0_5'"),  # Decimal() read it as 5
        ("' 5'", f"must be {SPELLING}, not ' 5'"),
        ("'+5'", f"must be {SPELLING}, not '+5'"),
        ("'1e400'", "must be at most 1000000000"),  # overflowed the Redis counters' 64-bit nano-units
        # "1E-400" was a budget of 0 nano-units, silently.
        ("'1E-400'", "has more than 9 decimal places (budgets count in nano-units)"),
        ("'0.1234567891'", "has more than 9 decimal places (budgets count in nano-units)"),
        ("-5", "must not be negative"),
        ("abc", f"must be {SPELLING}, not 'abc'"),
    ],
)
def test_a_config_budget_amount_is_one_the_counters_can_hold(amount, message):
    text = BASE + f"metering: {{budgets: [{{scope: tenant, id: '*', amount: {amount}, period: day}}]}}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.problems == [f"metering.budgets[0].amount: {message}"]


@pytest.mark.parametrize("amount", ["0", "'1000000000'", "'0.000000001'", "2.5", "'12.50'"])
def test_config_budget_amounts_the_counters_hold_are_accepted(amount):
    parse_config(BASE + f"metering: {{budgets: [{{scope: tenant, id: '*', amount: {amount}, period: day}}]}}\n")


@pytest.mark.parametrize("value", ["2026-02-30", "2026-13-01", "2026-12-31T25:00:00Z"])
def test_a_date_the_calendar_has_not_is_a_config_error_naming_its_line(value, tmp_path):
    """PyYAML reads these as timestamps and raised a bare ValueError: a traceback, not a config error."""
    text = (
        BASE
        + "storage: {url: 'sqlite+aiosqlite:///x.db'}\ncontracts:\n  commitments:\n"
        + f"    - {{id: c, provider: az, amount: '1', starts_on: 2026-01-01,\n       ends_on: {value}}}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert f"'{value}' is not a calendar date or time" in str(info.value) and "line 13" in str(info.value)
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "multihome.cli", "contracts", "list", "--config", str(path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert f"'{value}' is not a calendar date or time" in out.stderr


@pytest.mark.parametrize("code", ["usd", "US", "EURO", "'U5D'"])
def test_a_price_or_budget_currency_is_a_capitalised_iso_code(code):
    """A call counts towards a budget or a contract only in its price's currency, compared as written: a
    deployment priced in "usd" escaped every USD budget (and accrued to no USD contract), silently."""
    priced = BASE.replace(
        "model: gpt-4o-prod}", f"model: gpt-4o-prod, price: {{input: 1, output: 1, currency: {code}}}}}"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(priced)
    assert info.value.problems[0].startswith("deployments.d1.price.currency: must be a three-letter ISO 4217 code")
    budget = BASE + f"metering: {{budgets: [{{scope: tenant, id: '*', amount: 1, currency: {code}}}]}}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(budget)
    assert info.value.problems[0].startswith("metering.budgets[0].currency: must be a three-letter ISO 4217 code")


@pytest.mark.parametrize(
    ("basis", "problem"),
    [
        ("{providers: [azz]}", "contracts.revenue_share[0].basis.providers[0]: unknown provider 'azz'"),
        ("{providers: [az, azz]}", "contracts.revenue_share[0].basis.providers[1]: unknown provider 'azz'"),
        ("{model_groups: [gpt4o]}", "contracts.revenue_share[0].basis.model_groups[0]: unknown model group 'gpt4o'"),
    ],
)
def test_a_revenue_share_basis_naming_no_provider_or_group_of_the_config_is_refused(basis, problem):
    """A typo in a basis matched no call: the agreement silently never accrued (a commitment's provider was
    already checked)."""
    share = f"{{id: rs, rate: '0.1', starts_on: 2026-01-01, ends_on: 2026-12-31, basis: {basis}}}"
    text = BASE + f"storage: {{url: 'sqlite+aiosqlite:///x.db'}}\ncontracts: {{revenue_share: [{share}]}}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.problems == [problem]
    parse_config(text.replace("azz", "az").replace("gpt4o", "gpt-4o"))


@pytest.mark.parametrize(("field", "value"), [("rate", "'0_1'"), ("rate", "' 0.1'"), ("cap", "'+5'"), ("cap", "'NaN'")])
def test_a_contract_decimal_is_spelled_as_json_writes_a_number(field, value):
    """Decimal() read a rate of "0_1" as 1 and a cap of "+5" as 5: the config holds them to the admin API's spelling."""
    fields = {"rate": "'0.1'", "cap": "1", field: value}
    share = f"{{id: rs, starts_on: 2026-01-01, ends_on: 2026-12-31, rate: {fields['rate']}, cap: {fields['cap']}}}"
    text = BASE + f"storage: {{url: 'sqlite+aiosqlite:///x.db'}}\ncontracts: {{revenue_share: [{share}]}}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.problems == [f"contracts.revenue_share[0].{field}: must be {SPELLING}, not '{value[1:-1]}'"]


@pytest.mark.parametrize("value", ["1.2e-41", "1.5e-19", "0.0000000000000000001"])
def test_a_price_of_more_than_18_decimal_places_is_refused(value):
    """A cost has its price's places plus 6: a price of 1.2e-41 made a cost text of 66 characters, past the
    usage row's 64, so PostgreSQL refused every usage batch holding such a call (SQLite kept it)."""
    for field in ("input", "output", "cached_input"):
        fields = {"input": "1.0", "output": "1.0", field: value}
        priced = ", ".join(f"{k}: {v}" for k, v in fields.items())
        text = BASE.replace("model: gpt-4o-prod}", f"model: gpt-4o-prod, price: {{{priced}}}}}")
        with pytest.raises(ConfigError) as info:
            parse_config(text)
        assert info.value.problems[0].startswith(f"deployments.d1.price.{field}: ")
        assert "more than 18 decimal places" in info.value.problems[0]
    parse_config(
        BASE.replace("model: gpt-4o-prod}", "model: gpt-4o-prod, price: {input: 1.0e-18, output: 0.8333333333333334}}")
    )


STORED = "storage: {url: 'sqlite+aiosqlite:///mh.db'}\n"


@pytest.mark.parametrize(
    "provider, storage, message",
    [
        (
            "{kind: vertex, endpoint: 'https://x', region: us-central1, auth: {api_key_from: store}}",
            STORED,
            "providers.az.auth.api_key_from: store keeps an API key; kind 'vertex' takes none",
        ),
        (
            "{kind: azure, endpoint: 'https://x.openai.azure.com', auth: {api_key_from: store, api_key_env: K}}",
            STORED,
            "providers.az.auth.api_key_from: store takes the API key from the admin API; remove auth.api_key_env",
        ),
        (
            "{kind: azure, endpoint: 'https://x.openai.azure.com', auth: {api_key_from: store}}",
            "",
            "providers.az.auth.api_key_from: store keeps the key sealed in the database; set storage.url",
        ),
    ],
)
def test_a_stored_api_key_is_refused_where_it_cannot_work(provider, storage, message):
    """docs/encryption.md "Provider credentials": `store` is refused, with the key path, for a kind that
    takes no API key, together with another auth method, or without storage."""
    text = BASE.replace('az: {kind: azure, endpoint: "https://x.openai.azure.com"}', f"az: {provider}") + storage
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert message in str(info.value)
    fine = BASE.replace(
        'az: {kind: azure, endpoint: "https://x.openai.azure.com"}',
        "az: {kind: azure, endpoint: 'https://x.openai.azure.com', auth: {api_key_from: store}}",
    )
    assert parse_config(fine + STORED).providers["az"].auth.api_key_from == "store"
