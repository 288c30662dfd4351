"""docs/conformance.md from a run of the matrix.

`python -m tests.conformance.report [OUT]` (what `make conformance` runs) runs the matrix with
`MH_CONFORMANCE_REPORT=OUT` set; the conftest collects every outcome and calls `render` when the
session ends. The document is written even when scenarios fail: a ❌ is what it is there to show.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "docs" / "conformance.md"


def _cell(status: str, detail: str) -> str:
    if status == "pass":
        return "✅"
    if status == "gap":
        return f"gap: {detail}"
    return "❌"


def _table(scenarios: dict, providers: list[str], results: dict[tuple[str, str], tuple[str, str]]) -> list[str]:
    lines = ["| scenario | " + " | ".join(providers) + " |", "|---|" + "---|" * len(providers)]
    for sid, sc in scenarios.items():
        cells = [_cell(*results[(sid, p)]) if (sid, p) in results else "not run" for p in providers]
        lines.append(f"| {sc.title} (`{sid}`) | " + " | ".join(cells) + " |")
    return lines


def render(results: dict[tuple[str, str], tuple[str, str]], seconds: float) -> str:
    # Imported here: the conftest imports this module too, before the scenario module is rewritten.
    from .providers import TARGET_NAMES
    from .scenarios import SCENARIOS

    providers = [p for p in TARGET_NAMES if any(key[1] == p for key in results)]
    counts = {s: sum(1 for status, _ in results.values() if status == s) for s in ("pass", "gap", "xfail", "fail")}
    lines = [
        "# Conformance matrix",
        "",
        "What an application written against OpenAI's chat API can rely on, per upstream provider: each",
        "scenario drives the real `multihome` gateway with the official `openai` SDK, and the gateway",
        "translates to the provider's own wire format (served by its simulator, `docs/simulators.md`).",
        "Errors are produced with the simulators' fault knobs. Failover scenarios use a second deployment",
        "on an OpenAI simulator.",
        "",
        f"Generated {datetime.date.today().isoformat()} from one run ({seconds:.1f} s): "
        f"{counts['pass']} ✅, {counts['xfail'] + counts['fail']} ❌, {counts['gap']} gaps.",
        "Regenerate with `make conformance` (runs `tests/conformance/`; the same tests run in `make test`).",
        "",
        "- ✅ the scenario passed.",
        "- ❌ the gateway gets it wrong (details below the table).",
        "- gap: the provider itself cannot do it (documented limitation; declared in `tests/conformance/providers.py`).",
        "",
        "Scenarios: `tests/conformance/scenarios.py` (and `responses.py`; `published.py` holds the answers as sent against OpenAI's published schemas). Providers, their gaps and known gateway bugs:",
        "`tests/conformance/providers.py` (a new provider is one more `Target` there).",
        "",
    ]
    chat = {sid: sc for sid, sc in SCENARIOS.items() if not sid.startswith("responses_")}
    lines += _table(chat, providers, results)
    lines += [
        "",
        "## The Responses API",
        "",
        "The same providers behind `client.responses` (docs/responses.md). `openai` and `azure` are called",
        "natively on their own Responses API with `store: false`; the others through the canonical chat path.",
        "Each scenario checks which from the simulator's record; on the chat path `reasoning.effort` reaches the",
        "upstream in its own form (a Claude thinking budget, Gemini's `thinkingConfig`, `reasoning_effort`) and",
        "what Claude or Gemini reasoned comes back as a `reasoning` item with its summary (docs/translation/reasoning.md).",
        "",
    ]
    lines += _table({sid: sc for sid, sc in SCENARIOS.items() if sid not in chat}, providers, results)
    failures = [
        (sid, p, status, detail) for (sid, p), (status, detail) in results.items() if status in ("fail", "xfail")
    ]
    if failures:
        lines += ["", "## ❌ details", ""]
        for sid, p, status, detail in sorted(failures, key=lambda f: (TARGET_NAMES.index(f[1]), f[0])):
            tag = "known bug" if status == "xfail" else "failed"
            lines.append(f"- **{p} / `{sid}`** ({tag}): {detail}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    out = Path(argv[0]).resolve() if argv else DEFAULT_OUT
    before = out.stat().st_mtime_ns if out.exists() else None
    env = {**os.environ, "MH_CONFORMANCE_REPORT": str(out)}
    code = subprocess.call(
        [sys.executable, "-m", "pytest", "tests/conformance", "-q", "-p", "no:cacheprovider"], cwd=ROOT, env=env
    )
    if not out.exists() or out.stat().st_mtime_ns == before:
        print(f"conformance: no report written (pytest exit {code})", file=sys.stderr)
        return code or 1
    print(f"conformance: wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
