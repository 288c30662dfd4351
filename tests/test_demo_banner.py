"""The demo's banner: every line a newcomer copies works as printed."""

from __future__ import annotations

import sys

from multihome import demo


def test_the_python_line_names_the_interpreter_that_has_the_openai_package(monkeypatch, tmp_path):
    # `make demo` runs .venv/bin/multihome from the repository root: the banner's Python one-liner
    # must name that interpreter (it has openai), not a bare `python` that usually lacks it.
    monkeypatch.setattr(sys, "executable", str(tmp_path / ".venv" / "bin" / "python"))
    monkeypatch.chdir(tmp_path)
    banner = demo._banner("http://127.0.0.1:4000/v1", tmp_path / "demo.yaml", "http://127.0.0.1:9")
    assert "\n  .venv/bin/python -c 'from openai import OpenAI;" in banner
    assert "\n  python -c" not in banner
    # Run from elsewhere, the path is absolute: still the interpreter with the package.
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert f"\n  {tmp_path}/.venv/bin/python -c 'from openai" in demo._banner("http://x/v1", tmp_path, "http://y")
