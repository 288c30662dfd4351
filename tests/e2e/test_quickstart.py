"""docs/quickstart.md runs as written: its ```sh blocks, in order, in one bash session.

A user pastes the page's commands into one terminal at the repository root; this test does the
same in a scratch directory that holds what they touch (`.venv`, `examples/`). A block whose
fence is preceded by a `<!-- not run -->` line is skipped (`make demo` serves until Ctrl-C).
The only change made to the text is the ports: the gateway's and the simulators' fixed ports
(4000, 9101, 9102) become free ones, in the commands and in the copied example config, so the
test never collides with a demo or another test. Background processes (`&`) are killed at the
end whatever happens, and the whole run is bounded by a timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from multihome.config import load_config, named_env_vars
from ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "quickstart.md"
CONFIG = "examples/governed.yaml"
NOT_RUN = "<!-- not run -->"
FIXED_PORTS = ("4000", "9101", "9102")  # gateway, Azure simulator, OpenAI simulator
TIMEOUT_S = 150
# A block: an optional NOT_RUN line, then the fence; group 1 = the marker, group 2 = the commands.
_BLOCK = re.compile(r"^(<!-- not run -->\n)?```sh\n(.*?)^```$", re.M | re.S)
_TEXT = re.compile(r"^```text\n(.*?)^```$", re.M | re.S)
_HEREDOC = re.compile(r"<<'(\w+)'\n.*?^\1$", re.M | re.S)
# Variables a user's shell may already hold that would change what the page's commands do.
_FOREIGN_ENV = re.compile(r"^(MULTIHOME_|OPENAI_|AZURE_OPENAI_)")


def sh_blocks(text: str) -> list[tuple[bool, int, str]]:
    """(runs, line number of the fence, commands) for every ```sh block, in order."""
    out = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start(2))  # the fence's line, 1-based
        out.append((m.group(1) is None, line, m.group(2)))
    return out


def _venv(workdir: Path) -> None:
    """`.venv` as the page expects it: this interpreter's virtual environment, or a stand-in."""
    if sys.prefix != sys.base_prefix:
        (workdir / ".venv").symlink_to(sys.prefix, target_is_directory=True)
        return
    bin_dir = workdir / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "multihome").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m multihome.cli "$@"\n')
    (bin_dir / "multihome").chmod(0o755)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')


def _script(blocks: list[tuple[bool, int, str]], ports: dict[str, int]) -> str:
    lines = [
        "set -eo pipefail",
        # Which command failed, in the words of the page.
        "trap 'echo \"quickstart: FAILED (exit $?): $BASH_COMMAND\" >&2' ERR",
    ]
    for runs, line, commands in blocks:
        if runs:
            lines += [f"echo '@@ block at docs/quickstart.md:{line}'", _with_ports(commands, ports)]
    lines.append("echo '@@ done'")
    return "\n".join(lines) + "\n"


def _with_ports(text: str, ports: dict[str, int]) -> str:
    return re.sub(r"\b(" + "|".join(ports) + r")\b", lambda m: str(ports[m.group(1)]), text)


def test_the_page_has_the_expected_blocks():
    blocks = sh_blocks(DOC.read_text())
    skipped = [commands for runs, _, commands in blocks if not runs]
    assert skipped == ["make demo\n"], "only `make demo` (it serves until Ctrl-C) may be marked not run"
    assert len(blocks) >= 10
    doc = DOC.read_text()
    assert doc.count("```sh") == len(blocks), "a ```sh fence the pattern misses would silently not run"
    assert doc.count(NOT_RUN) == len(skipped), f"a {NOT_RUN} line that is not right before a ```sh fence"
    # An interactive zsh (macOS's shell) takes `#` as an argument unless interactivecomments is set.
    shell_text = _HEREDOC.sub("", "".join(commands for _, _, commands in blocks))
    assert not re.search(r"(^|\s)#", shell_text, re.M), "no # comments in the page's commands: say it in the prose"


def test_the_example_config_is_valid_and_names_no_client_variable():
    config = load_config(ROOT / CONFIG)
    assert config.storage.url and config.identity.admin_key_env == "MULTIHOME_ADMIN_KEY" and config.audit.dir
    named = {var for _, var in named_env_vars(config)}
    # The OpenAI SDK reads OPENAI_API_KEY as the gateway key: an upstream secret must be named otherwise.
    assert not named & {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MULTIHOME_API_KEY"}, named


def test_quickstart_runs_as_written(tmp_path):
    ports = dict(zip(FIXED_PORTS, free_ports(len(FIXED_PORTS))))
    blocks = sh_blocks(DOC.read_text())
    _venv(tmp_path)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    config = (ROOT / CONFIG).read_text()
    moved = _with_ports(config, ports)
    assert moved.count(str(ports["9101"])) and moved.count(str(ports["9102"])) and moved.count(str(ports["4000"])), (
        f"{CONFIG} no longer uses the ports the page does ({', '.join(FIXED_PORTS)}): update this test"
    )
    (tmp_path / CONFIG).write_text(moved)
    script = tmp_path / "quickstart.sh"
    script.write_text(_script(blocks, ports))

    env = {k: v for k, v in os.environ.items() if not _FOREIGN_ENV.match(k)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        ["bash", str(script)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\nquickstart: TIMED OUT after {TIMEOUT_S}s"
    finally:
        _kill_group(proc.pid)  # the simulators and the gateway, if the page did not stop them

    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((tmp_path / "quickstart").glob("*.log")))
    report = f"--- stdout\n{out[-6000:]}\n--- stderr\n{err[-4000:]}{logs}"
    assert proc.returncode == 0 and "@@ done" in out, report
    # What the page says the steps print, beyond their exit status.
    for expected in (
        "ok: 2 providers, 3 deployments, 2 model groups",
        "served by: gpt-4o@azure",
        "x-multihome-deployment: gpt-4o@azure",
        '"code":"entitlement_required"',
        "x-multihome-deployment: gpt-4o-mini@openai",
        "allowed: gpt-4o@azure",
        "x gpt-4o@openai: not allowed by tenant policy",
        '"group_by": "deployment"',
        "head registry entries verified",
        '"kind": "call"',
        "azure-commit,commitment,USD",
    ):
        assert expected in out, f"missing from the output: {expected!r}\n{report}"
    # The tables' headers as the page shows them (a column added or renamed is a page to update).
    headers = [
        line for block in _TEXT.findall(DOC.read_text()) for line in block.splitlines() if line.startswith("ID ")
    ]
    assert len(headers) >= 3, headers
    for header in headers:
        assert header in out.splitlines(), f"the page shows a table header the CLI does not print: {header!r}\n{report}"


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
