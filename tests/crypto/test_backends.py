"""What only one backend shows: Key Vault's auth challenge, Vault's key versions, AWS's encryption
context, and an unreachable KMS named in the error."""

from __future__ import annotations

import base64

import msgspec
import pytest

from multihome.config.kms import KmsTarget
from multihome.crypto import KmsRefused, KmsUnavailable, open_keyring, rewrap, rotate
from multihome.crypto.backends import build_backend
from multihome.crypto.envelope import parse_header

from .harness import AwsHarness, AzureHarness, VaultHarness
from .services import free_port

pytestmark = pytest.mark.anyio


async def test_azure_challenge_then_bearer_and_unwrap_in_the_vault(request, tmp_path, monkeypatch, engine):
    kms = AzureHarness(request, tmp_path, monkeypatch)
    ring = open_keyring(kms.config(), engine, build=kms.build)
    sealed = await ring.seal("t1", "credentials", "c", "1", b"x")
    ring.forget()
    assert await ring.open("t1", "credentials", "c", "1", sealed) == b"x"
    calls = kms.kv.sim.requests
    assert any(m == "POST" and p.endswith("/create") for m, p in calls)
    assert any(m == "POST" and p.endswith("/unwrapkey") for m, p in calls)
    backend = ring.resolver.kek_for("t1").backend
    assert backend._credential.scopes[0] == ("https://vault.azure.net/.default",)
    await ring.close()


async def test_azure_untrusted_certificate_is_unavailable_not_ignored(request, tmp_path, monkeypatch):
    kms = AzureHarness(request, tmp_path, monkeypatch)
    cfg = kms.config()
    target = msgspec.structs.replace(cfg, azure=msgspec.structs.replace(cfg.azure, ca_file=None))
    backend = kms.build(target, "kms")
    with pytest.raises(KmsUnavailable, match="Azure Key Vault"):
        await backend.generate_data_key("k", {}, create=True)


async def test_vault_versions_and_min_decryption_version(request, tmp_path, monkeypatch, engine):
    kms = VaultHarness(request, tmp_path, monkeypatch)
    ring = open_keyring(kms.config(), engine, build=kms.build)
    sealed = await ring.seal("t1", "memory", "m", "1", b"v1 data")
    assert parse_header(sealed).kek_version == "1"
    assert [r.kek_version for r in await rotate(ring, "t1")] == ["2"]
    row = (await ring.repo.page("", 10))[0]
    assert row.wrapped.startswith(b"vault:v1:")
    bao = request.getfixturevalue("openbao")
    name = ring.resolver.kek_for("t1").kek_id
    bao.request("POST", f"/v1/transit/keys/{name}/config", {"min_decryption_version": 2})
    ring.forget()
    with pytest.raises(KmsRefused, match="Vault Transit .* decrypt"):  # the old version no longer decrypts
        await ring.open("t1", "memory", "m", "1", sealed)
    bao.request("POST", f"/v1/transit/keys/{name}/config", {"min_decryption_version": 1})
    report = await rewrap(ring)
    assert report.rewrapped == 1
    assert (await ring.repo.page("", 10))[0].wrapped.startswith(b"vault:v2:")
    bao.request("POST", f"/v1/transit/keys/{name}/config", {"min_decryption_version": 2})
    ring.forget()
    assert await ring.open("t1", "memory", "m", "1", sealed) == b"v1 data"  # re-wrapped: v2 opens it
    await ring.close()


async def test_aws_wrapped_key_bound_to_its_context(request, tmp_path, monkeypatch):
    kms = AwsHarness(request, tmp_path, monkeypatch)
    backend = kms.build(kms.config(), "kms")
    new = await backend.generate_data_key(f"{kms.config().key_prefix}ctx", {"multihome:tenant": "a"}, create=True)
    assert new.kek_id.startswith("arn:aws:kms:us-east-1:")
    assert await backend.decrypt(new.kek_id, "", new.wrapped, {"multihome:tenant": "a"}) == new.plaintext
    with pytest.raises(KmsRefused, match="InvalidCiphertextException"):
        await backend.decrypt(new.kek_id, "", new.wrapped, {"multihome:tenant": "b"})


@pytest.mark.parametrize(
    "section",
    [
        {"backend": "vault", "vault": {"address": "http://127.0.0.1:{port}", "token_env": "MH_T"}},
        {"backend": "aws", "aws": {"region": "us-east-1", "endpoint": "http://127.0.0.1:{port}"}},
    ],
)
async def test_unreachable_kms_is_unavailable_and_named(section, monkeypatch):
    monkeypatch.setenv("MH_T", "x")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    text = msgspec.json.encode(section).decode().replace("{port}", str(port))
    backend = build_backend(msgspec.json.decode(text, type=KmsTarget), "kms")
    with pytest.raises(KmsUnavailable) as exc:
        await backend.generate_data_key("k", {}, create=False)
    assert f"127.0.0.1:{port}" in str(exc.value) and exc.value.kms == backend.label
    await backend.close()


async def test_azure_disabled_key_refuses_new_data_keys_and_unwraps_until_enabled(
    request, tmp_path, monkeypatch, engine
):
    # The SDK wraps with the public half it fetched, and Key Vault shows a disabled key's public half: a
    # backend that did not look at `enabled` kept wrapping new data keys under a key the KMS had disabled.
    from azure.keyvault.keys import KeyClient

    from .services import StaticToken

    kms = AzureHarness(request, tmp_path, monkeypatch)
    ring = open_keyring(kms.config(), engine, build=kms.build)
    sealed = await ring.seal("t1", "memory", "m", "1", b"before")
    name = ring.resolver.kek_for("t1").kek_id
    admin = KeyClient(
        kms.kv.url, StaticToken(kms.kv.TOKEN), verify_challenge_resource=False, connection_verify=str(kms.kv.cert)
    )
    try:
        assert admin.update_key_properties(name, enabled=False).properties.enabled is False
        assert admin.get_key(name).properties.enabled is False  # still readable, as Key Vault shows it
        await ring.repo.retire(tenants=["t1"])
        ring.forget()  # a replica without the keys cached: a new data key, and an unwrap
        with pytest.raises(KmsRefused, match="Azure Key Vault .*disabled"):
            await ring.seal("t1", "memory", "m", "2", b"after")
        with pytest.raises(KmsRefused, match="Azure Key Vault .*403 Forbidden"):
            await ring.open("t1", "memory", "m", "1", sealed)
        assert await ring.repo.count("t1") == 1  # nothing stored for the refused seal
        admin.update_key_properties(name, enabled=True)
        again = await ring.seal("t1", "memory", "m", "2", b"after")
        assert await ring.open("t1", "memory", "m", "1", sealed) == b"before"
        assert await ring.open("t1", "memory", "m", "2", again) == b"after"
    finally:
        admin.close()
        await ring.close()


async def test_aws_credentials_stay_out_of_botocore_debug_logs(request, tmp_path, monkeypatch, caplog):
    """Every logger at DEBUG: botocore logs each canonical request (the session token among its headers),
    each prepared request, and each response body (STS AssumeRole's: the role's secret key and token)."""
    import logging

    kms = AwsHarness(request, tmp_path, monkeypatch)
    section = kms.section()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "source-secret-access-key/EXAMPLE+KEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLE-session-token/of+the=source")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", section["aws"]["endpoint"])  # moto's STS: the role is assumed there
    section["aws"]["role_arn"] = "arn:aws:iam::123456789012:role/multihome-kms"
    backend = kms.build(msgspec.convert(section, KmsTarget), "kms")
    caplog.set_level(logging.DEBUG)
    new = await backend.generate_data_key(f"{section['key_prefix']}logs", {"multihome:tenant": "a"}, create=True)
    assert await backend.decrypt(new.kek_id, "", new.wrapped, {"multihome:tenant": "a"}) == new.plaintext
    role = backend._kms()._request_signer._credentials.get_frozen_credentials()  # the assumed role's
    assert role.token and role.secret_key != "source-secret-access-key/EXAMPLE+KEY"
    assert "x-amz-security-token" in caplog.text.lower() and "AssumeRole" in caplog.text  # what is under test ran
    secrets = ["FwoGZXIvYXdzEXAMPLE-session-token/of+the=source", role.token, role.secret_key]
    secrets += ["source-secret-access-key/EXAMPLE+KEY"]
    secrets += [base64.b64encode(new.plaintext).decode()]
    for secret in secrets:
        assert secret not in caplog.text
    await backend.close()


async def test_aws_role_arn_is_assumed_with_the_configured_region(request, tmp_path, monkeypatch):
    """`aws.role_arn` without AWS_REGION in the environment (an EC2 host, a plain container): the STS client
    that assumes the role takes the section's region (it had none: every KMS call was a NoRegionError)."""
    kms = AwsHarness(request, tmp_path, monkeypatch)
    section = kms.section()
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", section["aws"]["endpoint"])
    section["aws"]["role_arn"] = "arn:aws:iam::123456789012:role/multihome-kms"
    backend = kms.build(msgspec.convert(section, KmsTarget), "kms")
    new = await backend.generate_data_key(f"{section['key_prefix']}role", {"multihome:tenant": "a"}, create=True)
    assert await backend.decrypt(new.kek_id, "", new.wrapped, {"multihome:tenant": "a"}) == new.plaintext
    role = backend._kms()._request_signer._credentials.get_frozen_credentials()
    assert role.access_key != "testing" and role.token  # the assumed role's, not the source's
    await backend.close()


@pytest.mark.parametrize(
    "answer",
    [
        {},  # a proxy's empty 200
        [1, 2],  # JSON, not an object
        {"data": {"ciphertext": "vault:v1:abc"}},  # no plaintext
        {"data": {"ciphertext": "vault:v1:abc", "plaintext": "not base64!"}},
        {"data": {"ciphertext": "vault:v1:abc", "plaintext": "c2hvcnQ="}},  # 5 bytes: no AES-256 key
        {"data": {"ciphertext": 7}},
    ],
)
async def test_a_vault_answer_without_what_transit_returns_is_unavailable_not_a_crash(answer, monkeypatch):
    """A 200 that is not Transit's answer (a proxy, a wrong mount): KmsUnavailable naming Vault (a 503), never
    a KeyError, TypeError or binascii error, which were 500s; a key that is not 256 bits is never used."""
    import json

    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        if request.method == "GET":  # the key's description: a derived key
            return web.json_response({"data": {"derived": True, "latest_version": 1}})
        return web.Response(body=json.dumps(answer).encode(), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("MH_T", "token")
    section = {"backend": "vault", "vault": {"address": f"http://127.0.0.1:{port}", "token_env": "MH_T"}}
    backend = build_backend(msgspec.convert(section, KmsTarget), "kms")
    try:
        for use in (
            backend.generate_data_key("k", {"t": "a"}, create=False),
            backend.decrypt("k", "1", b"vault:v1:abc", {"t": "a"}),
        ):
            with pytest.raises(KmsUnavailable, match=r"Vault Transit .*: (datakey|decrypt): the answer"):
                await use
    finally:
        await backend.close()
        await runner.cleanup()


async def test_vault_refuses_new_data_keys_under_a_key_that_is_not_derived(request, tmp_path, monkeypatch, engine):
    """Transit ignores `context` for a key made without derived=true (checked on OpenBao: a data key wrapped
    for tenant a decrypts with tenant b's context). Such a `key_id` gets no new data keys: KmsRefused, nothing
    stored; a derived one works."""
    kms = VaultHarness(request, tmp_path, monkeypatch)
    bao = request.getfixturevalue("openbao")
    plain, derived = f"{tmp_path.name[-12:]}-plain", f"{tmp_path.name[-12:]}-derived"
    bao.request("POST", f"/v1/transit/keys/{plain}", {"type": "aes256-gcm96"})
    bao.request("POST", f"/v1/transit/keys/{derived}", {"type": "aes256-gcm96", "derived": True})
    ring = open_keyring(kms.config(key_id=plain), engine, build=kms.build)
    with pytest.raises(KmsRefused, match="not a derived key"):
        await ring.seal("t1", "memory", "m", "1", b"x")
    assert await ring.repo.count() == 0
    await ring.close()
    ring = open_keyring(kms.config(key_id=derived), engine, build=kms.build)
    sealed = await ring.seal("t1", "memory", "m", "1", b"x")
    ring.forget()
    assert await ring.open("t1", "memory", "m", "1", sealed) == b"x"
    await ring.close()
