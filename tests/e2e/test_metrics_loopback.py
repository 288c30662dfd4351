"""`metrics.access: loopback` (docs/metrics.md) against a caller that names 127.0.0.1 in `X-Forwarded-For`.

uvicorn rewrites a request's client address from `X-Forwarded-For` when the connection comes from an address
it trusts: 127.0.0.1 and ::1 by default, any with `FORWARDED_ALLOW_IPS=*` (its documented setting for a
container behind a proxy, read from the environment by `multihome serve` too). Then the header's first
address, which the caller wrote, was the client the loopback rule checked: a caller on the network read every
tenant's spend by sending `X-Forwarded-For: 127.0.0.1`. A request that came through a proxy is not a caller on
this host: it is refused whatever address it names.
"""

from __future__ import annotations

import socket

import httpx
import pytest

from builders import NOWHERE, config, deployment, group, open_door

from .processes import Gateway


def _network_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_a_forwarded_for_header_naming_loopback_does_not_open_metrics(tmp_path):
    address = _network_address()
    if address is None:
        pytest.skip("no network address besides loopback to call from")
    cfg = config(
        providers={"p": {"kind": "openai", "endpoint": NOWHERE}},
        deployments={"d": deployment("p", "m")},
        model_groups={"g": group("d")},
        server=open_door(),
        metrics={"enabled": True, "access": "loopback"},
    )
    gateway = Gateway(cfg, tmp_path, {"FORWARDED_ALLOW_IPS": "*"}, "--host", "0.0.0.0")
    try:
        remote = f"http://{address}:{gateway.port}/metrics"
        assert httpx.get(remote, timeout=10).status_code == 403  # from the network: refused
        for forwarded in ("127.0.0.1", "::1", "127.0.0.1, 203.0.113.9"):
            spoofed = httpx.get(remote, headers={"x-forwarded-for": forwarded}, timeout=10)
            # Before: 200 and the whole exposition.
            assert spoofed.status_code == 403, (forwarded, spoofed.text[:200])
            assert spoofed.json()["error"]["code"] == "metrics_forbidden"
        local = httpx.get(gateway.url + "/metrics", timeout=10)  # a scraper on this host, no proxy between
        assert local.status_code == 200 and "multihome_http_requests_total" in local.text
    finally:
        gateway.stop()
