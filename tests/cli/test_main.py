"""`multihome --version`, and the environment variables the CLI reads named in `--help`."""

from __future__ import annotations

import subprocess
import sys

import pytest

import multihome
from multihome.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"multihome {multihome.__version__}\n"


def test_help_names_the_environment_variables():
    out = subprocess.run([sys.executable, "-m", "multihome.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("MULTIHOME_URL", "MULTIHOME_ADMIN_KEY", "MULTIHOME_CONFIG"):
        assert name in out.stdout


def test_admin_commands_document_url_and_key(capsys):
    with pytest.raises(SystemExit):
        main(["keys", "list", "--help"])
    out = capsys.readouterr().out
    assert "$MULTIHOME_URL" in out and "$MULTIHOME_ADMIN_KEY" in out and "tenant name or id" in out


def test_serve_takes_its_config_from_the_environment(monkeypatch, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {}\n")
    monkeypatch.setenv("MULTIHOME_CONFIG", str(bad))
    assert main(["db", "upgrade"]) == 2  # read (and refused) the file the variable names


def test_output_piped_into_a_reader_that_stops_early_is_no_traceback(tmp_path):
    """`multihome contracts report --json | head`: the reader closes the pipe; the command stops quietly."""
    import os

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command prints: its first write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "multihome.cli", "audit", "keygen", "--out", str(tmp_path / "k.pem")],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 1
