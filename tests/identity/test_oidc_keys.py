"""JWKS fetching and caching against a real local issuer: rotation, floods, failures, schedules."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import msgspec
import pytest

from multihome.identity.oidc import OidcVerifier
from multihome.schema.principal import Principal
from oidc_issuer import LocalIssuer

from .helpers import forge, outcome, refused, verify_all

CLAIMS = {"tenant": "tid"}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def idp():
    with LocalIssuer() as issuer:
        yield issuer


def run(configs, scenario, **kw):
    async def go():
        verifier = OidcVerifier(configs, **kw)
        try:
            return await scenario(verifier)
        finally:
            await verifier.close()

    return asyncio.run(go())


def test_keys_are_fetched_once_and_served_from_memory(idp):
    results = verify_all([idp.config(claims=CLAIMS)], [idp.mint(tid="acme") for _ in range(20)])
    assert all(isinstance(r, Principal) for r in results)
    assert idp.jwks_fetches == 1


def test_rotation_is_picked_up_after_one_refresh_and_the_old_key_stops_working(idp):
    clock = Clock()

    async def scenario(v):
        old = idp.mint(tid="acme")
        assert isinstance(await outcome(v, old), Principal)
        assert idp.jwks_fetches == 1
        clock.t += 31  # past the minimum interval between forced refreshes
        idp.rotate()
        new = idp.mint(tid="acme")
        assert isinstance(await outcome(v, new), Principal)  # unknown kid -> one refresh -> verifies
        assert idp.jwks_fetches == 2
        refused(await outcome(v, old), 401, "unknown_key")  # removed from the JWKS, and no new fetch
        assert idp.jwks_fetches == 2
        assert isinstance(await outcome(v, idp.mint(tid="acme")), Principal)

    run([idp.config(claims=CLAIMS)], scenario, clock=clock)


def test_a_flood_of_unknown_kid_tokens_costs_the_issuer_at_most_one_fetch(idp):
    clock = Clock()

    async def scenario(v):
        assert isinstance(await outcome(v, idp.mint(tid="acme")), Principal)
        clock.t += 31
        idp.jwks_delay_s = 0.2  # the forced fetch is slow: everyone arrives while it is in flight
        bogus = [idp.mint(tid="acme", header={"kid": uuid.uuid4().hex}) for _ in range(200)]
        first = await asyncio.gather(*(outcome(v, t) for t in bogus))
        second = await asyncio.gather(*(outcome(v, t) for t in bogus))  # after it: within the interval
        for r in first + second:
            refused(r, 401, "unknown_key")
        assert idp.jwks_fetches == 2  # the initial fetch plus one forced refresh
        # Genuine tokens kept verifying from memory throughout.
        assert isinstance(await outcome(v, idp.mint(tid="acme")), Principal)
        clock.t += 31
        refused(await outcome(v, bogus[0]), 401, "unknown_key")
        assert idp.jwks_fetches == 3  # one more only once the interval has passed

    run([idp.config(claims=CLAIMS)], scenario, clock=clock)


def test_concurrent_first_requests_share_one_fetch(idp):
    idp.jwks_delay_s = 0.2

    async def scenario(v):
        results = await asyncio.gather(*(outcome(v, idp.mint(tid="acme")) for _ in range(50)))
        assert all(isinstance(r, Principal) for r in results)
        assert idp.jwks_fetches == 1

    run([idp.config(claims=CLAIMS)], scenario)


def test_slow_issuer_does_not_hold_up_another_issuers_requests(idp):
    with LocalIssuer(alg="ES256", path="/other") as other:
        other.jwks_gate = threading.Event()  # the other issuer's keys arrive only when the test says so

        async def scenario(v):
            slow = asyncio.ensure_future(outcome(v, other.mint(tid="acme")))
            while other.jwks_fetches == 0:  # its fetch is under way (bounded by the test's timeout)
                await asyncio.sleep(0.01)
            try:
                fast = await asyncio.wait_for(outcome(v, idp.mint(tid="acme")), 60)  # not behind the other
                assert isinstance(fast, Principal)
                assert not slow.done()
            finally:
                other.jwks_gate.set()
            assert isinstance(await slow, Principal)

        run([idp.config(claims=CLAIMS), other.config(name="other", claims=CLAIMS)], scenario)


def test_failed_refresh_keeps_the_old_keys(idp):
    clock = Clock()

    async def scenario(v):
        good = idp.mint(tid="acme")
        assert isinstance(await outcome(v, good), Principal)
        idp.jwks_status = 503
        clock.t += 700  # scheduled refresh due: it runs in the background and fails
        assert isinstance(await outcome(v, good), Principal)
        await asyncio.sleep(0.2)
        assert idp.jwks_fetches == 2 and "503" in v.caches["local"].last_error
        assert isinstance(await outcome(v, good), Principal)
        clock.t += 31
        refused(await outcome(v, idp.mint(tid="acme", header={"kid": "new"})), 401, "unknown_key")
        assert isinstance(await outcome(v, good), Principal)

    run([idp.config(claims=CLAIMS)], scenario, clock=clock)


def test_issuer_down_with_no_keys_is_a_503_and_recovers(idp):
    clock = Clock()
    idp.jwks_status = 500

    async def scenario(v):
        token = idp.mint(tid="acme")
        err = refused(await outcome(v, token), 503, "jwks_unavailable")
        assert "retry-after" in err.headers
        refused(await outcome(v, token), 503, "jwks_unavailable")
        assert idp.jwks_fetches == 1  # no hammering while it is down
        idp.jwks_status = 200
        clock.t += 31
        assert isinstance(await outcome(v, token), Principal)

    run([idp.config(claims=CLAIMS)], scenario, clock=clock)


def test_scheduled_refresh_follows_cache_control_max_age_or_refresh_s(idp):
    clock = Clock()

    async def scenario(v):
        token = idp.mint(tid="acme")
        await outcome(v, token)
        assert v.caches["local"].next_refresh == clock.t + 120  # max-age=120
        clock.t += 100
        await outcome(v, token)
        assert idp.jwks_fetches == 1
        clock.t += 21
        await outcome(v, token)  # stale: answered from memory, refreshed behind it
        await asyncio.sleep(0.2)
        assert idp.jwks_fetches == 2
        idp.cache_control = None
        clock.t += 121
        await outcome(v, token)
        await asyncio.sleep(0.2)
        assert idp.jwks_fetches == 3 and v.caches["local"].next_refresh == clock.t + 600

    idp.cache_control = "public, max-age=120"
    run([idp.config(claims=CLAIMS)], scenario, clock=clock)


@pytest.mark.parametrize(
    "cache_control, interval",
    [
        ("max-age=5", 30),  # below min_refresh_interval_s: a flood of short lifetimes costs no more fetches
        ("no-store", 30),
        ("max-age=31536000", 24 * 3600),  # a year: capped at 24 h, so a rotated key is picked up within a day
    ],
)
def test_max_age_is_clamped_to_the_minimum_interval_and_a_day(idp, cache_control, interval):
    """docs/oidc.md: refresh follows `Cache-Control: max-age`, clamped to [min_refresh_interval_s, 24 h]."""
    clock = Clock()

    async def scenario(v):
        await outcome(v, idp.mint(tid="acme"))
        assert v.caches["local"].next_refresh == clock.t + interval

    idp.cache_control = cache_control
    run([idp.config(claims=CLAIMS)], scenario, clock=clock)


def test_discovery_finds_the_jwks_and_a_mismatched_discovery_is_refused(idp):
    cfg = idp.config(claims=CLAIMS, jwks_uri=None)
    assert cfg.jwks_uri is None
    assert all(isinstance(r, Principal) for r in verify_all([cfg], [idp.mint(tid="acme")] * 3))
    assert idp.discovery_fetches == 1 and idp.jwks_fetches == 1
    # A discovery document for another issuer is not trusted for this one.
    with LocalIssuer() as other:
        lying = msgspec.structs.replace(cfg, issuer=other.issuer + "/elsewhere")
        token = idp.mint(tid="acme", iss=lying.issuer)
        refused(verify_all([lying], [token])[0], 503, "jwks_unavailable")


def test_symmetric_and_encryption_keys_in_a_jwks_are_ignored(idp):
    idp.extra_jwks = [
        {"kty": "oct", "kid": "shared", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "alg": "HS256"},
        {**idp.keys[idp.default_kid].public_jwk, "kid": "enc-key", "use": "enc"},
    ]
    hs = forge({"alg": "HS256", "kid": "shared"}, idp.claims(tid="acme"), hmac_secret=b"secretsecretsecretsecretsecret")
    rs_enc = idp.mint(tid="acme", header={"kid": "enc-key"})
    ok, r_hs, r_enc = verify_all([idp.config(claims=CLAIMS)], [idp.mint(tid="acme"), hs, rs_enc])
    assert isinstance(ok, Principal)
    refused(r_hs, 401, "algorithm_not_allowed")
    refused(r_enc, 401, "unknown_key")


def test_start_prefetches_and_close_stops_the_refresher(idp):
    async def scenario():
        v = OidcVerifier([idp.config(claims=CLAIMS)])
        await v.start()
        assert idp.jwks_fetches == 1 and v.caches["local"].loaded
        assert isinstance(await outcome(v, idp.mint(tid="acme")), Principal)
        assert idp.jwks_fetches == 1
        await v.close()

    asyncio.run(scenario())


def test_a_token_verified_once_still_expires_and_still_loses_a_removed_key(idp):
    async def scenario(v):
        # A short lifetime, longer if a busy machine took more than it to answer twice.
        for lifetime in (1, 5, 30, 120):
            exp = int(time.time()) + lifetime
            short = idp.mint(tid="acme", exp=exp)
            first, second = await outcome(v, short), await outcome(v, short)  # the second from the verified cache
            if time.time() < exp:
                break
        else:
            raise AssertionError("no token lived long enough to be verified twice")
        assert isinstance(first, Principal) and isinstance(second, Principal)
        assert short in v._verified
        while time.time() <= exp:  # bounded by the lifetime
            await asyncio.sleep(0.05)
        refused(await outcome(v, short), 401, "token_expired")

    run([idp.config(claims=CLAIMS, leeway_s=0)], scenario)


def test_verified_cache_is_bounded(idp):
    async def scenario(v):
        tokens = [idp.mint(tid="acme", sub=f"user-{i}") for i in range(30)]
        for t in tokens:
            assert (await v.verify(t)).subject.startswith("user-")
        assert len(v._verified) == 10
        assert [(await v.verify(t)).subject for t in tokens[:3]] == ["user-0", "user-1", "user-2"]

    run([idp.config(claims=CLAIMS)], scenario, verified_cache_size=10)


@pytest.mark.parametrize(
    "mode, error",
    [
        ("redirect", "HTTP 302"),  # to the real JWKS, on loopback: not followed
        ("junk", "not valid JSON"),
        ("huge", "larger than 524288 bytes"),  # streamed without end: cut at the bound
        ("gzip", "larger than 524288 bytes"),  # 64 KB on the wire, 64 MB inflated: cut as it inflates
        ("hang", "TimeoutError"),  # never answers: fetch_timeout_s
    ],
)
def test_a_jwks_endpoint_that_misbehaves_is_a_bounded_503(idp, mode, error):
    import gzip

    from aiohttp import web

    bomb = gzip.compress(b" " * (64 << 20)) if mode == "gzip" else b""
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        if mode == "redirect":
            raise web.HTTPFound(idp.jwks_uri)
        if mode == "junk":
            return web.Response(body=b"\x00\xff" * 100)
        if mode == "gzip":
            return web.Response(body=bomb, headers={"content-encoding": "gzip", "content-type": "application/json"})
        if mode == "hang":
            await release.wait()
        resp = web.StreamResponse()
        await resp.prepare(request)
        while not release.is_set():
            await resp.write(b" " * 65536)
        return resp

    async def scenario():
        runner = web.AppRunner(web.Application(), access_log=None)
        runner.app.router.add_get("/keys", handle)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        cfg = idp.config(claims=CLAIMS, jwks_uri=f"http://127.0.0.1:{port}/keys", fetch_timeout_s=1)
        verifier = OidcVerifier([cfg])
        try:
            err = refused(await asyncio.wait_for(outcome(verifier, idp.mint(tid="acme")), 60), 503, "jwks_unavailable")
            return err, verifier.caches["local"].last_error
        finally:
            release.set()
            await verifier.close()
            await runner.cleanup()

    err, last_error = asyncio.run(scenario())
    assert error in last_error and "retry-after" in err.headers
    assert idp.jwks_fetches == 0  # the redirect's target was never fetched
