"""The admin commands of `multihome` against a running gateway, as an operator uses them: tenants,
teams and keys given by name, tables with a header row and names beside ids, money in its currency,
a short line for a change and the API's JSON with --json, policy update/delete, and spend by key.

The CLI runs in this process (`main([...])`); the gateway is a real `multihome serve`.
"""

from __future__ import annotations

import json
import re
import sqlite3
from decimal import Decimal

import openai
import pytest

from multihome.cli import main

from .services import replicas
from .stores import head_database
from .test_budgets_admin import config_for  # one priced model group, storage, Redis, an admin key

ADMIN_KEY = "mh-bootstrap-admin-key-for-the-cli"


@pytest.fixture(scope="module")
def gateway(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    with replicas(
        tmp,
        head_database(request, "sqlite", tmp),
        config_for,
        {"MH_TEST_ADMIN_KEY": ADMIN_KEY},
        n=1,
    ) as (gw,):
        gw.db = tmp / "multihome.db"  # replicas' SQLite file (services.replicas)
        yield gw


@pytest.fixture
def cli(gateway, monkeypatch, capsys):
    """`cli("keys", "list", ...)` -> what it printed; the gateway and key come from the environment."""
    monkeypatch.setenv("MULTIHOME_URL", gateway.url)
    monkeypatch.setenv("MULTIHOME_ADMIN_KEY", ADMIN_KEY)

    def run(*argv: str) -> str:
        assert main(list(argv)) == 0
        return capsys.readouterr().out

    return run


def rows(out: str) -> list[list[str]]:
    """A printed table as cells (columns are two or more spaces apart)."""
    return [[c.strip() for c in line.split("  ") if c.strip()] for line in out.splitlines()]


def test_an_operator_session_by_names(cli, gateway):
    made = cli("tenants", "create", "acme")
    assert made.startswith("created tenant acme: ten_") and "{" not in made
    tenant = made.split(": ")[1].strip()
    assert json.loads(cli("tenants", "create", "globex", "--json"))["name"] == "globex"
    listed = rows(cli("tenants", "list"))
    assert listed[0] == ["ID", "NAME", "CREATED"] and [tenant, "acme"] == listed[1][:2]

    team = cli("teams", "create", "--tenant", "acme", "ml").split(": ")[1].strip()
    assert rows(cli("teams", "list", "--tenant", "acme"))[1][:2] == [team, "ml"]
    secret = cli("keys", "create", "--tenant", "acme", "--name", "app", "--team", "ml").splitlines()[1].split(": ")[1]
    header, key = rows(cli("keys", "list", "--tenant", "acme"))
    assert header == ["ID", "NAME", "PREFIX", "TEAM", "ROLES", "EXPIRES", "STATUS"]
    assert key[1] == "app" and key[3] == f"{team} (ml)" and key[4:] == ["member", "never", "active"]

    granted = cli(
        "entitlements",
        "grant",
        "--tenant",
        "acme",
        "--model",
        "priced",
        "--from",
        "2020-01-01",
        "--to",
        "2099-12-31",
        "--exclusive",
    )
    assert granted.startswith(f"granted priced to tenant {tenant} from 2020-01-01 to 2099-12-31 (exclusive): ent_")
    header, ent = rows(cli("entitlements", "list", "--tenant", "acme"))
    assert header == ["ID", "MODEL GROUP", "FROM", "TO", "EXCLUSIVE", "STATUS", "NOTE"]
    assert ent[1:6] == ["priced", "2020-01-01", "2099-12-31", "yes", "active"]

    budget = cli("budgets", "create", "--tenant", "acme", "--amount", "1000.5", "--period", "total")
    assert budget.startswith("created budget bud_") and "USD 1,000.50 in total, hard" in budget

    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
    client.chat.completions.create(model="priced", messages=[{"role": "user", "content": "hello"}])
    header, spent = rows(cli("budgets", "list", "--tenant", "acme"))
    assert header == ["ID", "SCOPE", "APPLIES TO", "PERIOD", "MODE", "SPENT", "LIMIT", "USED", "REMAINING", "SET BY"]
    assert spent[1:5] == ["tenant", f"{tenant} (acme)", "total", "hard"] and spent[6] == "USD 1,000.50"
    assert spent[9] == "org-admin"
    assert re.fullmatch(r"USD [\d,]+\.\d\d", spent[5]) and Decimal(spent[5][4:].replace(",", "")) > 0
    assert re.fullmatch(r"\d+\.\d%", spent[7])

    by_key = cli("usage", "--tenant", "acme", "--by", "key")
    assert by_key.splitlines()[0] == f"spend by key in tenant {tenant} (acme), the beginning to now"
    header, line = rows("\n".join(by_key.splitlines()[1:]))
    assert header == [
        "KEY",
        "CALLS",
        "ERRORS",
        "UNSERVED",
        "INPUT TOKENS",
        "OUTPUT TOKENS",
        "OF WHICH REASONING",
        "COST",
    ]
    assert line[0].endswith("(app)") and line[1:4] == ["1", "0", "0"] and line[6] == "0"
    assert re.fullmatch(r"USD [\d,]+\.\d{4}", line[7])
    hourly = rows("\n".join(cli("usage", "--tenant", "acme", "--by", "key", "--per", "hour").splitlines()[1:]))
    assert hourly[0][:2] == ["HOUR", "KEY"] and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z", hourly[1][0])
    org = rows("\n".join(cli("usage", "--by", "tenant", "--from", "2020-01-01").splitlines()[1:]))
    assert [r[0] for r in org[1:]] == [f"{tenant} (acme)"]
    # across tenants a key is named with its tenant: two tenants' teams or keys of one name stay apart
    org_keys = rows("\n".join(cli("usage", "--by", "key", "--from", "2020-01-01").splitlines()[1:]))
    assert [r[0].split("/")[0] for r in org_keys[1:]] == [tenant] and org_keys[1][0].startswith(f"{tenant}/key_")
    assert json.loads(cli("usage", "--tenant", "acme", "--json"))["group_by"] == "model_group"


def test_policy_create_update_delete(cli):
    cli("tenants", "create", "initech")
    made = cli("policy", "create", "--tenant", "initech", '{"scope": "tenant", "rules": [{"effect": "deny"}]}')
    assert made.startswith("created policy pol_") and "(tenant ten_" in made and "1 rules" in made
    policy = made.split()[2]
    updated = cli(
        "policy",
        "update",
        "--tenant",
        "initech",
        policy,
        '{"rules": [{"effect": "allow", "data_zones": ["EU"]}, {"effect": "deny"}]}',
        "--description",
        "EU",
    )
    assert updated == f"updated policy {policy} (2 rules)\n"
    header, row = rows(cli("policy", "list", "--tenant", "initech"))
    assert header == ["ID", "SCOPE", "APPLIES TO", "RULES", "SET BY", "DESCRIPTION"] and row[0] == policy
    assert row[2].endswith("(initech)") and row[3:] == ["2", "org-admin", "EU"]
    assert json.loads(cli("policy", "delete", "--tenant", "initech", policy))["deleted"] is True
    assert json.loads(cli("policy", "list", "--tenant", "initech", "--json"))["data"] == []


def test_an_unknown_name_lists_the_known_ones_and_an_unknown_id_is_left_to_the_api(cli):
    cli("tenants", "create", "hooli")
    with pytest.raises(SystemExit, match=r"no tenant 'nowhere' \(by name or id; known: .*hooli \(ten_"):
        cli("keys", "list", "--tenant", "nowhere")
    with pytest.raises(SystemExit, match="error 404: tenant ten_nothere not found"):
        cli("teams", "create", "--tenant", "ten_nothere", "x")


def test_the_static_keys_tenant_is_named_by_its_id(cli):
    """The tenant of the config's keys (identity.static_keys_tenant) is in no list: the CLI takes its id, as
    the gateway reports it for a static key's caller."""
    assert json.loads(cli("mcp-servers", "list", "--tenant", "default", "--json"))["data"] == []
    assert json.loads(cli("usage", "--tenant", "default", "--json"))["group_by"] == "model_group"
    with pytest.raises(SystemExit, match=r"no tenant 'defaults' \(by name or id"):
        cli("usage", "--tenant", "defaults")


def test_an_mcp_server_at_an_address_the_egress_rules_refuse_is_refused_when_registered(cli):
    """A real `multihome serve` without `egress:` (public addresses only): registering the cloud's metadata
    service is a 400 the command shows in one line, naming the address and the setting; nothing is stored.
    On main: registered, and every call to it refused."""
    refused = r"error 400: url: 169\.254\.169\.254 \(169\.254\.169\.254\) is not an address .*egress\.allow_networks"
    with pytest.raises(SystemExit, match=refused):
        cli("mcp-servers", "add", "meta", "--tenant", "default", "--server-url", "http://169.254.169.254/latest/")
    assert json.loads(cli("mcp-servers", "list", "--tenant", "default", "--json"))["data"] == []


def test_a_stored_row_that_cannot_be_read_is_named_beside_the_list(cli, gateway, capsys):
    # The admin API reports such a row under `unreadable`, apart from `data`; a table without it would
    # silently miss a key the operator has to revoke.
    tenant = cli("tenants", "create", "unreadable-co").split(": ")[1].strip()
    cli("keys", "create", "--tenant", tenant, "--name", "good")
    broken = json.loads(cli("keys", "create", "--tenant", tenant, "--name", "broken", "--json"))["id"]
    with sqlite3.connect(gateway.db) as db:
        db.execute("UPDATE api_keys SET roles = 'null' WHERE id = ?", (broken,))
    assert main(["keys", "list", "--tenant", tenant]) == 0
    printed = capsys.readouterr()
    assert [r[1] for r in rows(printed.out)[1:]] == ["good"]
    assert "1 stored row(s) cannot be read" in printed.err and f"api_keys {broken}: " in printed.err
    assert "roles" in printed.err
