"""Bedrock credentials: botocore's chain, assume-role with refresh off the event loop, signing."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest

from builders import open_door, provider, single, typed
from multihome.config import AwsAuth
from multihome.providers.aws import AwsCredentials
from multihome.providers.bedrock import adapter as bedrock
from multihome.schema.errors import ApiError
from multihome.simulators import SimulatorConfig, start_simulator_in_thread
from multihome.simulators.bedrock.sigv4 import Secret, verify

AKID, SECRET, REGION = "AKIDAUTHTEST", "auth-secret", "eu-west-1"


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AKID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _adapter(**fields) -> bedrock.BedrockAdapter:
    cfg = typed(single(provider("bedrock", region=REGION, **fields), names=("br", "d", "g"), server=open_door()))
    return bedrock.build("br", cfg.providers["br"])


def test_env_credentials_sign_a_request_aws_accepts(aws_env):
    adapter = _adapter()
    url = adapter._runtime.url("arn:aws:bedrock:eu-west-1:1:inference-profile/eu.anthropic.x-v1:0", "converse")
    assert str(url) == (
        "https://bedrock-runtime.eu-west-1.amazonaws.com/model/"
        "arn%3Aaws%3Abedrock%3Aeu-west-1%3A1%3Ainference-profile%2Feu.anthropic.x-v1%3A0/converse"
    )
    headers = asyncio.run(adapter._runtime._signer.headers(str(url), b"{}", {"content-type": "application/json"}))
    assert (
        "Credential=AKIDAUTHTEST/" in headers["Authorization"]
        and "/eu-west-1/bedrock/aws4_request" in headers["Authorization"]
    )
    # The host and path as the upstream client puts them on the wire: pyqwest sends an encoded URL as it
    # is (tests/routing/test_upstream_client.py checks that on real HTTP).
    wire = urlsplit(url)
    lower = {k.lower(): v for k, v in headers.items()} | {"host": wire.netloc}
    assert (
        verify("POST", wire.path, lower, b"{}", keys={AKID: Secret(SECRET, None)}, region=REGION, service="bedrock")
        is None
    )
    assert (
        verify("POST", wire.path, lower, b"{ }", keys={AKID: Secret(SECRET, None)}, region=REGION, service="bedrock")
        is not None
    )


def test_api_key_is_a_bearer_token(monkeypatch):
    monkeypatch.setenv("MH_BR_API_KEY", "br-key-1")
    adapter = _adapter(auth={"api_key_env": "MH_BR_API_KEY"})
    headers = asyncio.run(
        adapter._runtime._signer.headers("https://x/model/m/converse", b"{}", {"content-type": "application/json"})
    )
    assert headers == {"content-type": "application/json", "authorization": "Bearer br-key-1"}


def test_no_credentials_is_a_502_naming_the_provider(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ApiError) as err:
        asyncio.run(AwsCredentials("br", REGION, None).get())
    assert err.value.status == 502 and "'br'" in err.value.body.message


def test_assumed_role_refreshes_in_the_background(aws_env, monkeypatch):
    sim = start_simulator_in_thread(
        SimulatorConfig(kind="bedrock", region=REGION, aws_access_key_id=AKID, aws_secret_access_key=SECRET)
    )
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sim.url)
        # 14 minutes: inside botocore's 15-minute advisory window, so every check wants a refresh.
        sim.call(setattr, sim.sim.app, "sts_lifetime_s", 14 * 60)
        creds = AwsCredentials("br", REGION, AwsAuth(role_arn="arn:aws:iam::1:role/r"))

        async def scenario():
            first = await creds.get()
            assert first.access_key.startswith("ASIA") and first.token
            calls_after_first = sim.sim.app.sts_calls
            creds._check_at = 0  # skip the 1 s recheck interval
            loop_blocked = 0.0
            t0 = time.perf_counter()
            again = await creds.get()  # due for refresh: must answer at once with valid credentials
            loop_blocked = time.perf_counter() - t0
            assert again == first and loop_blocked < 0.05
            for _ in range(100):  # bounded wait for the background refresh
                if creds._refresh is None and sim.sim.app.sts_calls > calls_after_first:
                    break
                await asyncio.sleep(0.02)
            creds._check_at = 0
            newer = creds._frozen
            assert sim.sim.app.sts_calls == calls_after_first + 1 and newer.access_key != first.access_key

        asyncio.run(scenario())
    finally:
        sim.close()


def test_assumed_role_credentials_stay_out_of_botocore_debug_logs(aws_env, monkeypatch, caplog):
    """Every logger at DEBUG: botocore logs STS's answer (the role's secret key and session token) and each
    canonical request it signs (the session token among the headers); the gateway's filter redacts them."""
    import logging

    sim = start_simulator_in_thread(
        SimulatorConfig(kind="bedrock", region=REGION, aws_access_key_id=AKID, aws_secret_access_key=SECRET)
    )
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sim.url)
        creds = AwsCredentials("br", REGION, AwsAuth(role_arn="arn:aws:iam::1:role/r"))
        caplog.set_level(logging.DEBUG)
        adapter = _adapter()
        adapter._runtime._signer._credentials = creds
        url = adapter._runtime.url("anthropic.x-v1:0", "converse")
        headers = asyncio.run(adapter._runtime._signer.headers(str(url), b"{}", {"content-type": "application/json"}))
        role = creds._frozen
        assert role is not None and role.token and headers["X-Amz-Security-Token"] == role.token
        assert "CanonicalRequest" in caplog.text and "AssumeRole" in caplog.text  # what is under test ran
        for secret in (role.token, role.secret_key, SECRET):
            assert secret not in caplog.text
    finally:
        sim.close()
