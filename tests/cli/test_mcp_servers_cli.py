"""`multihome mcp-servers list|add|update|remove` against the real gateway app served by uvicorn on
127.0.0.1 (a thread of this process): header values come from environment variables or stdin, never
argv, and never show up in what the commands print."""

from __future__ import annotations

import io
import json

import pytest

from admin_http import served_for_cli
from multihome.cli import main

ADMIN_KEY = "mh-bootstrap-admin-key-for-the-mcp-cli"
SECRET = "mcp-cli-header-secret-0b7d41"

CONFIG = """
storage: {{url: "sqlite+aiosqlite:///{tmp}/mh.db"}}
identity: {{admin_key_env: MH_TEST_MCP_CLI_ADMIN}}
kms: {{local: {{key_file: "{tmp}/kms.key"}}}}
providers: {{p: {{kind: openai, endpoint: "http://127.0.0.1:9/v1"}}}}
deployments: {{d: {{provider: p, model: m}}}}
model_groups: {{g: {{deployments: [d]}}}}
"""


@pytest.fixture
def gateway(tmp_path, monkeypatch):
    monkeypatch.setenv("MH_TEST_MCP_CLI_ADMIN", ADMIN_KEY)
    with served_for_cli(CONFIG.format(tmp=tmp_path), monkeypatch, ADMIN_KEY):
        yield


def test_add_list_update_remove(gateway, capsys, monkeypatch):
    def run(*argv: str, stdin: str | None = None) -> str:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        assert main(list(argv)) == 0
        return capsys.readouterr().out

    tenant = run("tenants", "create", "acme").split(": ")[1].strip()
    monkeypatch.setenv("CRM_TOKEN", f"Bearer {SECRET}")
    out = run(
        "mcp-servers",
        "add",
        "crm",
        "--tenant",
        "acme",
        "--server-url",
        "https://crm.example.com/mcp",
        "--allowed-tool",
        "lookup",
        "--require-approval",
        '{"never": {"tool_names": ["lookup"]}}',
        "--header-env",
        "Authorization=CRM_TOKEN",
    )
    assert out == "registered MCP server crm at https://crm.example.com/mcp (headers: Authorization)\n"
    listed = run("mcp-servers", "list", "--tenant", "acme")
    assert "crm" in listed and "lookup" in listed and "Authorization" in listed
    out = run(
        "mcp-servers", "update", "crm", "--tenant", tenant, "--headers-stdin", stdin=f"X-Key: {SECRET}\nX-Team: a\n"
    )
    assert out == "updated MCP server crm\n"
    shown = json.loads(run("mcp-servers", "list", "--tenant", "acme", "--json"))["data"][0]
    assert shown["header_names"] == ["X-Key", "X-Team"] and shown["allowed_tools"] == ["lookup"]
    shown = json.loads(run("mcp-servers", "update", "crm", "--tenant", "acme", "--all-tools", "--no-headers", "--json"))
    assert shown["allowed_tools"] is None and shown["header_names"] == []
    assert run("mcp-servers", "remove", "crm", "--tenant", "acme") == "removed MCP server crm\n"
    assert "crm" not in run("mcp-servers", "list", "--tenant", "acme")
    with pytest.raises(SystemExit, match="is not set"):
        main(
            [
                "mcp-servers",
                "add",
                "x",
                "--tenant",
                "acme",
                "--server-url",
                "https://x.example/mcp",
                "--header-env",
                "A=NOPE_UNSET",
            ]
        )
    with pytest.raises(SystemExit, match="error 400"):
        main(["mcp-servers", "add", "x", "--tenant", "acme", "--server-url", "ftp://x.example/mcp"])
    assert SECRET not in capsys.readouterr().out


def test_a_server_at_an_address_the_egress_rules_refuse_is_refused_in_one_line(gateway, capsys):
    """The gateway (no `egress:`: public addresses only) refuses the cloud's metadata service when it is
    registered, not at every call; the command exits with the API's reason and registers nothing."""
    assert main(["tenants", "create", "acme"]) == 0
    for argv in (
        ["add", "meta", "--tenant", "acme", "--server-url", "http://169.254.169.254/latest/"],
        ["add", "meta", "--tenant", "acme", "--server-url", "http://2130706433/"],
    ):
        with pytest.raises(SystemExit) as refused:
            main(["mcp-servers", *argv])
        said = str(refused.value.code)
        assert said.startswith("error 400: url: "), said
        assert "is not an address the gateway may connect to" in said and "egress.allow_networks" in said, said
    assert "(127.0.0.1)" in said  # what the decimal spelling resolves to
    assert main(["mcp-servers", "add", "crm", "--tenant", "acme", "--server-url", "http://mcp.invalid/"]) == 0
    with pytest.raises(SystemExit, match=r"error 400: url: localhost \(127\.0\.0\.1"):
        main(["mcp-servers", "update", "crm", "--tenant", "acme", "--server-url", "http://localhost:8080/"])
    capsys.readouterr()
    assert main(["mcp-servers", "list", "--tenant", "acme", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["data"]
    assert [(s["name"], s["url"]) for s in listed] == [("crm", "http://mcp.invalid/")]
