"""`multihome audit keygen --out FILE` (docs/audit.md, docs/quickstart.md step 5): a private key of mode
0600, its id and public key printed; an existing file is never overwritten (a signing key in use), and
saying so is an error message, not a traceback."""

from __future__ import annotations

import stat

from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from multihome.audit.keys import key_id_of
from multihome.cli import main


def test_keygen_writes_a_private_key_prints_its_public_half_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "audit.pem"
    assert main(["audit", "keygen", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    first, *pem = capsys.readouterr().out.splitlines(keepends=True)
    private = load_pem_private_key(out.read_bytes(), password=None)
    public = load_pem_public_key("".join(pem).encode())  # what the quickstart keeps for `audit verify`
    assert first == f"key id: {key_id_of(private.public_key())}\n" == f"key id: {key_id_of(public)}\n"

    before = out.read_bytes()
    assert main(["audit", "keygen", "--out", str(out)]) == 1
    said = capsys.readouterr()
    assert str(out) in said.err and "exists" in said.err and "Traceback" not in said.err and said.out == ""
    assert out.read_bytes() == before


def test_keygen_into_a_missing_directory_says_so(tmp_path, capsys):
    assert main(["audit", "keygen", "--out", str(tmp_path / "nowhere" / "audit.pem")]) == 1
    said = capsys.readouterr().err
    assert "cannot create" in said and "No such file or directory" in said and "Traceback" not in said
