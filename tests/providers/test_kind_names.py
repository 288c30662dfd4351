"""No module outside providers/ and simulators/ dispatches on a provider kind by its name.

What a kind means (its default endpoint, required fields, auth methods, telemetry name, adapter)
is data in its descriptor, `providers/<kind>/__init__.py`, listed once in
`providers/registry.py`. Code elsewhere that compares `kind == "bedrock"` or keeps a
`{"bedrock": ...}` table is a second, hand-kept list that a new provider kind silently misses
(issue 12 found five in config.py and two in observability/genai.py).

The rule, checked on the syntax tree of every module under src/multihome/ except
`providers/**` and `simulators/**` (the kinds' own code) and ALLOWED below: a string constant
equal to a registered kind name (`providers.registry.NAMES`) is reported when it is

- an operand of a comparison (`kind == "bedrock"`, `kind in ("bedrock", "vertex")`);
- a key of a dict literal (`{"bedrock": ...}`) or a subscript (`table["bedrock"]`);
- a `case "bedrock":` pattern;
- an argument of `Literal[...]` (a hand-kept enum of kinds);
- one of three or more kind names in one tuple, list or set literal (a hand-kept list of kinds).

Other uses are not kind dispatch and pass: a keyword argument that picks a kind
(`SimulatorConfig(kind="azure")`), docstrings and messages, and the front doors naming the API
they speak (`api/public_openapi.py` names its two doors "openai" and "anthropic"; two names in a
tuple are below the list threshold). Tests are not scanned: they configure kinds by name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from multihome.providers.registry import KINDS, NAMES

SRC = Path(__file__).resolve().parents[2] / "src" / "multihome"
OWNERS = ("providers/", "simulators/")
# module (relative to src/multihome) -> why it may name kinds
ALLOWED = {
    "demo/__init__.py": "builds the demo's own config and simulators (an Azure and an OpenAI one), like a YAML file would",
    # KMS backends, not provider kinds: Azure Key Vault shares the word "azure" with Azure OpenAI.
    "config/kms.py": "names the KMS backends (local, aws, vault, azure)",
    "crypto/envelope.py": "numbers the KMS backends in the ciphertext header",
}
KIND_NAMES = frozenset(NAMES)


def _kinds_in(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and node.value in KIND_NAMES:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in KIND_NAMES]
    return []


def _dispatch(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every use of a kind name the module docstring's rule reports."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                found += [(node.lineno, f"compares with {k!r}") for k in _kinds_in(operand)]
        elif isinstance(node, ast.Dict):
            found += [
                (k.lineno, f"dict key {k.value!r}")
                for k in node.keys
                if isinstance(k, ast.Constant) and k.value in KIND_NAMES
            ]
        elif isinstance(node, ast.Subscript):
            if isinstance(node.value, ast.Name) and node.value.id == "Literal":
                found += [
                    (c.lineno, f"Literal[{c.value!r}]")
                    for c in ast.walk(node.slice)
                    if isinstance(c, ast.Constant) and c.value in KIND_NAMES
                ]
            elif isinstance(node.slice, ast.Constant) and node.slice.value in KIND_NAMES:
                found.append((node.lineno, f"subscript [{node.slice.value!r}]"))
        elif isinstance(node, ast.match_case):
            found += [
                (p.lineno, f"case {p.value.value!r}")
                for p in ast.walk(node.pattern)
                if isinstance(p, ast.MatchValue) and isinstance(p.value, ast.Constant) and p.value.value in KIND_NAMES
            ]
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            kinds = _kinds_in(node)
            if len(set(kinds)) >= 3:
                found.append((node.lineno, f"a list of kinds {kinds}"))
    return found


def test_no_module_outside_providers_dispatches_on_a_kind_name() -> None:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(OWNERS) or rel in ALLOWED:
            continue
        for line, what in _dispatch(ast.parse(path.read_text(), str(path))):
            problems.append(f"src/multihome/{rel}:{line}: {what}")
    assert not problems, (
        "provider kinds named outside providers/ (read providers.registry instead; "
        "docs/adding-a-provider.md):\n" + "\n".join(problems)
    )


def test_the_rule_catches_what_it_names() -> None:
    code = """
if kind == "bedrock": pass
if kind in ("bedrock", "vertex"): pass
NAMES = {"gemini": 1}
x = table["azure"]
k: Literal["openai", "other"]
ALL = ("openai", "azure", "anthropic")
match kind:
    case "vertex": pass
SimulatorConfig(kind="azure")
OPENAI, ANTHROPIC = "openai", "anthropic"
"""
    found = [what for _, what in _dispatch(ast.parse(code))]
    assert found.count("compares with 'bedrock'") == 2
    assert "compares with 'vertex'" in found
    assert "dict key 'gemini'" in found and "subscript ['azure']" in found
    assert "Literal['openai']" in found and "case 'vertex'" in found
    assert "a list of kinds ['openai', 'azure', 'anthropic']" in found
    assert len(found) == 8  # the keyword argument and the two-name tuple pass


def test_allowed_modules_exist() -> None:
    for rel in ALLOWED:
        assert (SRC / rel).is_file(), f"ALLOWED names {rel}, which is gone: drop the entry"


def test_the_registry_is_a_leaf() -> None:
    """config/ reads the registry at load time, so importing it must pull in nothing but the
    descriptors: no adapter, no schema, no config (which would be an import cycle)."""
    code = (
        "import sys, multihome.providers.registry; "
        "print('\\n'.join(m for m in sys.modules if m.startswith('multihome')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    folders = {kind.adapter.rpartition(".")[0] for kind in KINDS}  # each kind's package, holding its KIND
    expected = {"multihome", "multihome.providers", "multihome.providers.kind", "multihome.providers.registry"}
    assert set(out) - expected <= folders, sorted(set(out) - expected - folders)
