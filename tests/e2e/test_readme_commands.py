"""README's shell blocks, run as an operator copies them: every `multihome ...` line of its ```sh blocks,
in order, through the installed `multihome` command against a served gateway (the config's names are
README's own: model group gpt-4o over gpt-4o@azure and gpt-4o@openai, contract rs-fabrikam-2026). The
only edits are what README leaves to the reader: the gateway's address, the admin key, the config file
and the `pol_...` id printed by the command before. Each command must succeed, and what README says it
prints (`# -> ...`, the `keys list` table) must be what it prints. `route explain` reads MULTIHOME_URL
like the admin commands (it went to port 4000 whatever was exported)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from builders import api_keys, config, deployment, group, identity, price, simulated, sqlite, yaml_text

from .processes import VENV_BIN, Gateway

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
ADMIN, CLIENT = "mh-readme-admin-key", "mh-readme-client-key"
ENV = {"MH_README_ADMIN": ADMIN, "MH_README_CLIENT": CLIENT, "MH_README_UPSTREAM": "readme-upstream-secret"}


def sh_blocks() -> list[list[str]]:
    """README's ```sh blocks, each as its lines without comments (a `# -> ...` comment kept apart)."""
    return [block.strip().splitlines() for block in re.findall(r"```sh\n(.*?)```", README, re.S)]


def commands() -> list[tuple[str, str | None]]:
    """(`multihome ...` or `export ...` line, what its `# -> ` comment says it prints) in README's order."""
    out = []
    for block in sh_blocks():
        for line in block:
            text, _, comment = line.partition("  #")
            text = text.strip()
            if text.startswith(("multihome ", "export ")):
                said = comment.strip()[3:].strip() if comment.strip().startswith("-> ") else None
                out.append((text, said))
    return out


def _config(sims_url: dict[str, str], tmp: Path) -> dict:
    return config(
        server=api_keys("MH_README_CLIENT"),
        identity=identity("MH_README_ADMIN"),
        storage=sqlite(tmp / "multihome.db"),
        providers={
            "azure-eastus": simulated("azure", sims_url["azure"], key_env="MH_README_UPSTREAM", data_zone="US"),
            "openai": simulated("openai", sims_url["openai"], key_env="MH_README_UPSTREAM", data_zone="EU"),
        },
        deployments={
            "gpt-4o@azure": deployment("azure-eastus", "gpt-4o-prod", price=price(2.5, 10)),
            "gpt-4o@openai": deployment("openai", "gpt-4o", price=price(2.5, 10)),
        },
        model_groups={"gpt-4o": group("gpt-4o@azure", "gpt-4o@openai", retries=1)},
        contracts={
            "revenue_share": [
                {
                    "id": "rs-fabrikam-2026",
                    "parties": ["Contoso", "Fabrikam"],
                    "rate": "0.15",
                    "starts_on": "2026-01-01",
                    "ends_on": "2026-12-31",
                    "cap": "250000.00",
                }
            ]
        },
    )


@pytest.fixture
def served(simulator, tmp_path):
    sims = {
        "azure": simulator("azure", "readme-azure", key_env="MH_README_UPSTREAM", env=ENV),
        "openai": simulator("openai", "readme-openai", key_env="MH_README_UPSTREAM", env=ENV),
    }
    cfg = _config({name: sim.url for name, sim in sims.items()}, tmp_path)
    (tmp_path / "gateway.yaml").write_text(yaml_text(cfg))
    gw = Gateway(cfg, tmp_path, ENV)
    yield gw, tmp_path / "gateway.yaml"
    gw.stop()


def test_the_readme_commands_work_as_written(served, tmp_path):
    gw, config_file = served
    listed = commands()
    assert len(listed) >= 16, listed  # the admin block and the metering block are both found
    # The commands run in tmp_path (burn.svg is written there): this checkout's code, by an absolute path.
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT / "src")}
    env.pop("MULTIHOME_URL", None)
    env.pop("MULTIHOME_CONFIG", None)
    printed: dict[str, str] = {}

    def run(line: str) -> str:
        done = subprocess.run(shlex.split(line), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    for line, said in listed:
        line = line.replace("pol_...", printed.get("policy", "pol_..."))
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            value = shlex.split(value)[0] if value else value
            # What README leaves to the reader: where the gateway is, its admin key, the config file.
            value = {"MULTIHOME_URL": gw.url, "MULTIHOME_ADMIN_KEY": ADMIN, "MULTIHOME_CONFIG": str(config_file)}.get(
                name, value
            )
            env[name] = value
            if name == "MULTIHOME_ADMIN_KEY":
                # README: `POST /v1/route/explain` or `multihome route explain gpt-4o` (a client key, from
                # OPENAI_API_KEY as the SDKs read it), against the exported MULTIHOME_URL.
                env["OPENAI_API_KEY"] = CLIENT
                explained = run("multihome route explain gpt-4o")
                assert "would attempt: gpt-4o@azure -> gpt-4o@openai" in explained, explained
            continue
        out = run(line)
        printed[line] = out
        if said:
            assert out.startswith(said.split("...")[0]), (line, out)
        if line.startswith("multihome policy create"):
            printed["policy"] = re.search(r"pol_[a-z0-9]+", out)[0]

    # The table README shows for `keys list`: its header, and the key created as `ci`, a member.
    table = next(lines for lines in re.findall(r"```\n(ID .*?)```", README, re.S))
    header = table.splitlines()[0].split()
    keys_out = printed["multihome keys list --tenant acme"].splitlines()
    assert keys_out[0].split() == header
    (row,) = [r.split() for r in keys_out[1:] if r.strip()]
    shown = dict(zip(header, row, strict=True))
    example = dict(zip(header, table.splitlines()[1].split(), strict=True))
    assert shown["NAME"] == example["NAME"] == "ci" and shown["ROLES"] == example["ROLES"] == "member"
    assert shown["STATUS"] == example["STATUS"] and shown["EXPIRES"] == example["EXPIRES"]
    assert len(shown["PREFIX"]) == len(example["PREFIX"]), (shown, example)  # the key's visible prefix
    # `budgets list`: spent, limit, % used and remaining, as README's comment shows them.
    budgets = printed["multihome budgets list --tenant acme"]
    money = r"USD [\d,]+\.\d\d"
    shape = rf"{money}\s+{money}\s+\d+\.\d%\s+{money}"
    assert re.search(shape, budgets) and re.search(shape, README), budgets
    assert "USD 50.00" in budgets
    assert (tmp_path / "burn.svg").read_text().lstrip().startswith(("<svg", "<?xml"))
