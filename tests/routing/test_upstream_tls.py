"""Upstream TLS trust (providers/transport.py): a provider behind a CA of its own (a TLS-inspecting
proxy's) is reached once SSL_CERT_FILE names that CA, as aiohttp's default SSL context did, and refused
while nothing trusts it: against a real local TLS server with a CA made here."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from builders import config, deployment, group, open_door, simulated, typed
from multihome.routing.catalog import Catalog
from multihome.schema.errors import ApiError
from routing.attempt_call import attempt_call

_ANSWER = msgspec.json.encode(
    {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
)


def _ca_and_leaf(tmp: Path) -> None:
    """ca.pem (a CA nobody trusts by default) and leaf.pem/leaf.key it signed for `localhost`."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "multihome test inspecting proxy CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp / "leaf.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


async def _tls_upstream(tmp: Path) -> tuple[asyncio.Server, str, list[bytes]]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "leaf.pem", tmp / "leaf.key")
    lines: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()  # the client refused the certificate
            return
        length = next(
            (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0
        )
        await reader.readexactly(length)
        lines.append(head.split(b"\r\n")[0])
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(_ANSWER), _ANSWER)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    # `localhost`, the name the certificate is for.
    return server, f"https://localhost:{server.sockets[0].getsockname()[1]}", lines


async def _call(url: str):
    catalog = Catalog(
        typed(
            config(
                server=open_door(),
                providers={"p": simulated("openai", url)},
                deployments={"d": deployment("p", "m")},
                model_groups={"g": group("d", retries=0)},
            )
        )
    )
    await catalog.start()
    try:
        return await attempt_call(catalog, "g", b'{"model": "g", "messages": [{"role": "user", "content": "hi"}]}')
    finally:
        await catalog.close()


def _run(tmp: Path):
    async def run():
        server, url, lines = await _tls_upstream(tmp)
        try:
            return await _call(url), lines
        finally:
            server.close()

    return asyncio.run(run())


def test_an_upstream_behind_an_own_ca_is_reached_once_ssl_cert_file_names_it(tmp_path, monkeypatch):
    _ca_and_leaf(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    served, lines = _run(tmp_path)
    assert not isinstance(served, ApiError), served
    assert served.status == 200 and [a.outcome for a in served.attempts] == ["ok"]
    assert lines == [b"POST /v1/chat/completions HTTP/1.1"]


def test_an_upstream_certificate_nothing_trusts_is_refused(tmp_path, monkeypatch):
    _ca_and_leaf(tmp_path)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    err, lines = _run(tmp_path)
    assert isinstance(err, ApiError) and [a.outcome for a in err.attempts] == ["connection_error"], err
    assert lines == []  # no request was sent over the untrusted connection
