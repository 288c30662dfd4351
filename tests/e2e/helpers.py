"""What several end-to-end tests share: waiting for a condition with a deadline, and a tenant with an
API key made through the admin API."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")


def until(predicate: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    """`predicate()`'s first truthy value, polled every 50 ms; an AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def attempts(raw: object) -> list[tuple[str, str]]:
    """(deployment, outcome) per attempt, from a raw response's `x-multihome-attempts` header."""
    header = raw.headers["x-multihome-attempts"]  # type: ignore[attr-defined]
    items = [part.split(";") for part in header.split(", ")]
    return [(item[0], item[1].removeprefix("outcome=")) for item in items]


def aws_env(tmp: Path, akid: str, secret: str, profile: str = "multihome") -> dict[str, str]:
    """The environment in which botocore's credential chain finds exactly one identity: `profile`
    in a shared credentials file under `tmp` (no ambient keys, no config file, no IMDS)."""
    creds = tmp / "aws-credentials"
    creds.write_text(f"[{profile}]\naws_access_key_id = {akid}\naws_secret_access_key = {secret}\n")
    return {
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SESSION_TOKEN": "",
        "AWS_PROFILE": "",
    }


def tenant_with_key(admin: httpx.Client, name: str, roles: tuple[str, ...] = ("member",)) -> tuple[str, str]:
    """A new tenant and an API key of it: (tenant id, key)."""
    resp = admin.post("/admin/v1/tenants", json={"name": name})
    assert resp.status_code == 201, resp.text
    tenant = resp.json()["id"]
    resp = admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "k", "roles": list(roles)})
    assert resp.status_code == 201, resp.text
    return tenant, resp.json()["key"]
