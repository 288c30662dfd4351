"""A real, local OIDC issuer for tests: discovery + JWKS over HTTP on loopback, token minting.

    with LocalIssuer() as idp:                      # RS256 key, serving on 127.0.0.1:<free port>
        cfg = idp.config(claims={"tenant": "tid"})  # an IssuerConfig trusting it
        token = idp.mint(tid="acme", roles=["admin"])
        idp.rotate()                                # new kid published, old one removed
        idp.jwks_fetches                            # how often the JWKS was fetched

The server runs in its own thread (http.server), so it serves any event loop and other
processes (e2e gateways) alike. Fault knobs: `jwks_status`, `jwks_delay_s`, `jwks_gate`
(a threading.Event: the JWKS answer waits until it is set, at most 60 s), `cache_control`.

It also signs people in (the authorization code flow with PKCE, for the console's single sign-on): its
authorization endpoint approves at once as the person whose claims `login_as` holds, and its token
endpoint trades the code, once, for an ID token with the client as audience and the request's nonce.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from multihome.config.oidc import IssuerConfig

DEFAULT_AUDIENCE = "api://multihome"


class SigningKey:
    def __init__(self, alg: str, kid: str, key_size: int = 2048) -> None:
        self.alg, self.kid = alg, kid
        if alg.startswith(("RS", "PS")):
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
            jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        elif alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            raise ValueError(f"unsupported test key algorithm {alg}")
        self.public_jwk = {**jwk, "kid": kid, "use": "sig", "alg": alg}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class LocalIssuer:
    def __init__(
        self,
        *,
        alg: str = "RS256",
        path: str = "/realms/test",
        audience: str = DEFAULT_AUDIENCE,
        cache_control: str | None = None,
    ) -> None:
        self.audience = audience
        self.path = path.rstrip("/")
        self.cache_control = cache_control
        self.jwks_status = 200
        self.jwks_delay_s = 0.0
        self.jwks_gate: threading.Event | None = None
        self.extra_jwks: list[dict[str, Any]] = []  # raw entries appended to the published JWKS
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.keys: dict[str, SigningKey] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.default_kid = self.add_key(alg)
        self.login_as: dict[str, Any] = {"sub": "person-1"}  # the claims of whoever signs in next
        self.codes: dict[str, dict[str, Any]] = {}  # authorization code -> what it was issued for
        self.token_requests = 0

    # -- server --------------------------------------------------------------------------------

    def start(self) -> LocalIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == issuer.path + "/.well-known/openid-configuration":
                    with issuer._lock:
                        issuer.discovery_fetches += 1
                    body = {
                        "issuer": issuer.issuer,
                        "jwks_uri": issuer.jwks_uri,
                        "authorization_endpoint": issuer.issuer + "/protocol/openid-connect/auth",
                        "token_endpoint": issuer.issuer + "/protocol/openid-connect/token",
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                    }
                    self._send(200, body)
                elif self.path.startswith(issuer.path + "/protocol/openid-connect/auth?"):
                    q = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
                    code = secrets.token_urlsafe(16)
                    with issuer._lock:
                        issuer.codes[code] = {**q, "claims": dict(issuer.login_as)}
                    target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")})
                    self.send_response(302)
                    self.send_header("location", target)
                    self.send_header("content-length", "0")
                    self.end_headers()
                elif self.path == issuer.path + "/protocol/openid-connect/certs":
                    with issuer._lock:
                        issuer.jwks_fetches += 1
                        status, delay, gate = issuer.jwks_status, issuer.jwks_delay_s, issuer.jwks_gate
                        doc = issuer.jwks()
                    if delay:
                        time.sleep(delay)
                    if gate is not None:
                        gate.wait(60)
                    self._send(status, doc if status == 200 else {"error": "unavailable"}, issuer.cache_control)
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                if self.path != issuer.path + "/protocol/openid-connect/token":
                    self._send(404, {"error": "not found"})
                    return
                length = int(self.headers.get("content-length") or 0)
                form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                with issuer._lock:
                    issuer.token_requests += 1
                    grant = issuer.codes.pop(form.get("code", ""), None)  # a code is good once
                verifier = form.get("code_verifier", "").encode()
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).decode().rstrip("=")
                if (
                    grant is None
                    or form.get("grant_type") != "authorization_code"
                    or form.get("redirect_uri") != grant["redirect_uri"]
                    or form.get("client_id") != grant["client_id"]
                    or challenge != grant.get("code_challenge")
                ):
                    self._send(400, {"error": "invalid_grant"})
                    return
                claims = {**grant["claims"], "aud": grant["client_id"], "nonce": grant.get("nonce")}
                self._send(200, {"id_token": issuer.mint(**claims), "token_type": "Bearer", "expires_in": 300})

            def _send(self, status: int, doc: dict, cache_control: str | None = None) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if cache_control:
                    self.send_header("cache-control", cache_control)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the issuer first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def issuer(self) -> str:
        return self.base_url + self.path

    @property
    def jwks_uri(self) -> str:
        return self.issuer + "/protocol/openid-connect/certs"

    # -- keys ----------------------------------------------------------------------------------

    def add_key(self, alg: str = "RS256", kid: str | None = None, key_size: int = 2048) -> str:
        key = SigningKey(alg, kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}", key_size)
        with self._lock:
            self.keys[key.kid] = key
        return key.kid

    def remove_key(self, kid: str) -> None:
        with self._lock:
            del self.keys[kid]

    def rotate(self, alg: str | None = None) -> str:
        """Publish a new key and remove every old one; tokens minted from now on use the new kid."""
        alg = alg or self.keys[self.default_kid].alg
        new = SigningKey(alg, f"{alg.lower()}-{uuid.uuid4().hex[:8]}")
        with self._lock:
            self.keys = {new.kid: new}
            self.default_kid = new.kid
        return new.kid

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in self.keys.values()] + self.extra_jwks}

    def public_pem(self, kid: str | None = None) -> bytes:
        return self.keys[kid or self.default_kid].public_pem()

    # -- tokens --------------------------------------------------------------------------------

    def claims(self, *, exp_in: float = 300, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {"iss": self.issuer, "aud": self.audience, "sub": "user-1", "iat": now, "exp": now + int(exp_in)}
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}  # pass claim=None to drop a claim

    def mint(
        self,
        *,
        kid: str | None = None,
        with_kid: bool = True,
        header: dict | None = None,
        exp_in: float = 300,
        **claims: Any,
    ) -> str:
        key = self.keys[kid or self.default_kid]
        headers = {"kid": key.kid} if with_kid else {}
        headers.update(header or {})
        token = jwt.encode(self.claims(exp_in=exp_in, **claims), key.private, algorithm=key.alg, headers=headers)
        if not with_kid:
            assert "kid" not in jwt.get_unverified_header(token)
        return token

    def sign_raw(self, payload: bytes, *, kid: str | None = None, header: dict | None = None) -> str:
        """A token over these exact payload bytes (JSON PyJWT would not write: huge numbers, duplicated keys),
        signed with a published key: only what the gateway makes of the claims is under test."""
        key = self.keys[kid or self.default_kid]
        head = {"alg": key.alg, "typ": "JWT", "kid": key.kid, **(header or {})}
        signing_input = b".".join(
            base64.urlsafe_b64encode(part).rstrip(b"=") for part in (json.dumps(head).encode(), payload)
        )
        signature = jwt.get_algorithm_by_name(key.alg).sign(signing_input, key.private)
        return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()

    # -- gateway config ------------------------------------------------------------------------

    def config_dict(self, **overrides: Any) -> dict[str, Any]:
        """The `identity.oidc` entry (as YAML would hold it) that trusts this issuer."""
        algs = sorted({k.alg for k in self.keys.values()})
        base = {
            "name": "local",
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "audiences": [self.audience],
            "algorithms": algs,
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def config(self, **overrides: Any) -> IssuerConfig:
        return msgspec.convert(self.config_dict(**overrides), IssuerConfig)
