"""An Azure Key Vault simulator: the REST calls the `azure` KMS backend makes, as the service speaks
them (https only, `api-version` required, Entra bearer auth with Key Vault's 401 challenge).

    POST   /keys/{name}/create                 create a key, or a new version of it (KeyBundle)
    GET    /keys/{name}[/{version}]            the key's public JWK and attributes (KeyBundle), disabled or not
    PATCH  /keys/{name}/[{version}]            update attributes (`enabled`) of a version (none: the newest)
    POST   /keys/{name}/{version}/wrapkey      {"alg","value"} -> {"kid","value"}  (base64url, no padding)
    POST   /keys/{name}/{version}/unwrapkey    same shape, the other way
    DELETE /keys/{name}                        soft-delete (DeletedKeyBundle)
    GET    /deletedkeys/{name}                 the deleted key (what the SDK's delete poller waits for)
    DELETE /deletedkeys/{name}                 purge: 204

Keys are RSA; wrap algorithms RSA-OAEP and RSA-OAEP-256. A disabled version still answers GET (its public
half and `enabled: false`, as Key Vault shows disabled versions) but refuses wrapKey/unwrapKey with 403
`Forbidden` ("Operation unwrapKey is not allowed on a disabled key.", inner error `KeyDisabled`, the shape
Key Vault gives a disabled secret). An unauthenticated request gets 401 with
`WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
resource="https://vault.azure.net"`; a request with another token gets 401 without a challenge.
Errors use Key Vault's envelope `{"error": {"code", "message"}}`. `start_in_thread` serves it with
TLS on a loopback port for tests.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

API_VERSIONS = frozenset({"2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01"})
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
_PADDING = {
    "RSA-OAEP": lambda: padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    "RSA-OAEP-256": lambda: padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


@dataclass
class _Version:
    version: str
    private: rsa.RSAPrivateKey
    created: int
    enabled: bool = True
    updated: int = 0


@dataclass
class _Key:
    versions: list[_Version] = field(default_factory=list)
    deleted: int | None = None


class KeyVaultSim:
    def __init__(self, token: str) -> None:
        self.token = token
        self.base = ""  # https://127.0.0.1:<port>, set when served
        self.keys: dict[str, _Key] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every authorised call

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": {"code": code, "message": message}}, status=status)

    def _bundle(self, name: str, v: _Version) -> dict[str, Any]:
        pub = v.private.public_key().public_numbers()
        return {
            "key": {
                "kid": f"{self.base}/keys/{name}/{v.version}",
                "kty": "RSA",
                "key_ops": ["encrypt", "decrypt", "wrapKey", "unwrapKey", "sign", "verify"],
                "n": b64url(_int_bytes(pub.n)),
                "e": b64url(_int_bytes(pub.e)),
            },
            "attributes": {
                "enabled": v.enabled,
                "created": v.created,
                "updated": v.updated or v.created,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
        }

    def _version(self, name: str, version: str) -> _Version | web.Response:
        key = self.keys.get(name)
        if key is None or key.deleted is not None or not key.versions:
            return self._error(404, "KeyNotFound", f"A key with (name/id) {name} was not found in this key vault.")
        if not version:
            return key.versions[-1]
        for v in key.versions:
            if v.version == version:
                return v
        return self._error(
            404, "KeyNotFound", f"A key with (name/id) {name}/{version} was not found in this key vault."
        )

    # -- middleware: api-version and auth -----------------------------------------------------------
    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return web.json_response(
                {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}},
                status=401,
                headers={
                    "WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/'
                    f'{TENANT}", resource="https://vault.azure.net"'
                },
            )
        if auth[len("Bearer ") :] != self.token:
            return self._error(401, "Unauthorized", "AKV10032: Invalid issuer or token.")
        if request.query.get("api-version") not in API_VERSIONS:
            return self._error(400, "BadParameter", "The 'api-version' query parameter is missing or not supported.")
        self.requests.append((request.method, request.path))
        return await handler(request)

    # -- handlers --------------------------------------------------------------------------------
    async def create(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.json()
        if body.get("kty") not in ("RSA", "RSA-HSM"):
            return self._error(400, "BadParameter", "This simulator creates RSA keys only.")
        key = self.keys.get(name)
        if key is not None and key.deleted is not None:
            return self._error(409, "Conflict", f"Key {name} is currently in a deleted but recoverable state.")
        key = self.keys.setdefault(name, _Key())
        size = int(body.get("key_size") or 2048)
        v = _Version(
            secrets.token_hex(16), rsa.generate_private_key(public_exponent=65537, key_size=size), int(time.time())
        )
        key.versions.append(v)
        return web.json_response(self._bundle(name, v))

    async def get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        v = self._version(name, request.match_info.get("version", ""))
        return v if isinstance(v, web.Response) else web.json_response(self._bundle(name, v))

    async def update(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        v = self._version(name, request.match_info.get("version", ""))
        if isinstance(v, web.Response):
            return v
        attributes = (await request.json()).get("attributes") or {}
        if "enabled" in attributes:
            v.enabled = bool(attributes["enabled"])
        v.updated = int(time.time())
        return web.json_response(self._bundle(name, v))

    async def wrap(self, request: web.Request) -> web.Response:
        return await self._key_op(request, wrap=True)

    async def unwrap(self, request: web.Request) -> web.Response:
        return await self._key_op(request, wrap=False)

    async def _key_op(self, request: web.Request, *, wrap: bool) -> web.Response:
        name = request.match_info["name"]
        v = self._version(name, request.match_info["version"])
        if isinstance(v, web.Response):
            return v
        if not v.enabled:
            op = "wrapKey" if wrap else "unwrapKey"
            return web.json_response(
                {
                    "error": {
                        "code": "Forbidden",
                        "message": f"Operation {op} is not allowed on a disabled key.",
                        "innererror": {"code": "KeyDisabled"},
                    }
                },
                status=403,
            )
        body = await request.json()
        pad = _PADDING.get(body.get("alg", ""))
        if pad is None or "value" not in body:
            return self._error(400, "BadParameter", "Invalid or missing 'alg' / 'value'.")
        try:
            value = unb64url(body["value"])
            out = v.private.public_key().encrypt(value, pad()) if wrap else v.private.decrypt(value, pad())
        except ValueError:
            return self._error(400, "BadParameter", "The ciphertext could not be decrypted with this key.")
        return web.json_response({"kid": f"{self.base}/keys/{name}/{v.version}", "value": b64url(out)})

    async def delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        v = self._version(name, "")
        if isinstance(v, web.Response):
            return v
        self.keys[name].deleted = int(time.time())
        return web.json_response(self._deleted(name))

    def _deleted(self, name: str) -> dict[str, Any]:
        key = self.keys[name]
        bundle = self._bundle(name, key.versions[-1])
        return {
            **bundle,
            "recoveryId": f"{self.base}/deletedkeys/{name}",
            "deletedDate": key.deleted,
            "scheduledPurgeDate": (key.deleted or 0) + 90 * 86400,
        }

    async def get_deleted(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        key = self.keys.get(name)
        if key is None or key.deleted is None:
            return self._error(404, "KeyNotFound", f"Deleted key {name} was not found.")
        return web.json_response(self._deleted(name))

    async def purge(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        key = self.keys.get(name)
        if key is None or key.deleted is None:
            return self._error(404, "KeyNotFound", f"Deleted key {name} was not found.")
        del self.keys[name]
        return web.Response(status=204)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        app.add_routes(
            [
                web.post("/keys/{name}/create", self.create),
                web.get("/keys/{name}", self.get),
                web.get("/keys/{name}/", self.get),
                web.get("/keys/{name}/{version}", self.get),
                web.patch("/keys/{name}/", self.update),
                web.patch("/keys/{name}/{version}", self.update),
                web.post("/keys/{name}/{version}/wrapkey", self.wrap),
                web.post("/keys/{name}/{version}/unwrapkey", self.unwrap),
                web.delete("/keys/{name}", self.delete),
                web.get("/deletedkeys/{name}", self.get_deleted),
                web.delete("/deletedkeys/{name}", self.purge),
            ]
        )
        return app


class ServedSim:
    """The simulator on https://127.0.0.1:<port> in a background thread."""

    def __init__(self, sim: KeyVaultSim, ssl_context: ssl.SSLContext) -> None:
        self.sim = sim
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, args=(ssl_context,), name="keyvault-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("Key Vault simulator did not start")
        sim.base = self.url

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _run(self, ssl_context: ssl.SSLContext) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._runner = web.AppRunner(self.sim.app(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def start_in_thread(token: str, ssl_context: ssl.SSLContext) -> ServedSim:
    return ServedSim(KeyVaultSim(token), ssl_context)
