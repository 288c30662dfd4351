"""What several end-to-end tests share: waiting for a condition with a deadline, checking a replica's
promise to apply a change within a bound, and a tenant with an API key made through the admin API."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx

T = TypeVar("T")
V = TypeVar("V")


def until(predicate: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    """`predicate()`'s first truthy value, polled every 50 ms; an AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finished(client: Any, response_id: str, timeout: float = 60.0) -> Any:
    """The Response `response_id` once it is final (not `queued` or `in_progress`), read with the openai SDK."""
    return until(
        lambda: (r := client.responses.retrieve(response_id)).status not in ("queued", "in_progress") and r,
        timeout,
        f"{response_id} to finish",
    )


def usage_of(url: str, admin_key: str, deployment: str, calls: int) -> dict:
    """The admin API's usage row of `deployment` (grouped by deployment) once it counts `calls` calls."""
    admin = httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin_key}"}, timeout=10)

    def found() -> dict | None:
        data = admin.get("/admin/v1/usage", params={"group_by": "deployment"}).json()["data"]
        row = next((r for r in data if r["deployment"] == deployment), None)
        return row if row is not None and row["calls"] >= calls else None

    return until(found, what=f"{calls} usage rows of {deployment}")


class Staleness(NamedTuple):
    """How long after a change's commit a replica was last seen answering the old way (`after_commit`),
    and the slowest answer it gave meanwhile (`slowest`, a round trip as this process timed it)."""

    after_commit: float
    slowest: float

    def within(self, bound: float) -> bool:
        """The replica's promise to apply a change within `bound`, allowing what the machine's load
        costs it: a replica that takes s seconds to answer a call cannot have polled, loaded its
        snapshot and applied it in less (on a quiet machine s is a few ms, under load a second)."""
        return self.after_commit <= bound + self.slowest


def stale_for(
    applied: Callable[[], bool], committed: float, timeout: float = 60.0, what: str = "the change"
) -> Staleness:
    """Poll `applied()` (True once a replica answers the new way) until it is, failing after `timeout` s
    (a generous deadline: "never applied"). Measures how long after `committed` (time.monotonic() read
    once the change's commit was answered) the replica was last seen answering the old way, counted
    to when that probe was *sent*: the replica answered it no earlier. So the figure never includes
    the time this process took to notice (its own share of a busy machine, the probe's round trip)."""
    stale = slowest = 0.0
    while time.monotonic() < committed + timeout:
        sent = time.monotonic()
        done = applied()
        slowest = max(slowest, time.monotonic() - sent)
        if done:
            return Staleness(stale, slowest)
        stale = max(stale, sent - committed)
        time.sleep(0.01)
    raise AssertionError(f"{what} was not applied within {timeout} s")


def in_one_minute(attempt: Callable[[V], T], variants: Sequence[V]) -> T:
    """`attempt(variant)`'s result from the first run that fell inside one UTC minute, trying each
    variant in turn. Rate windows are fixed UTC minutes: rather than wait for a minute's start, a test
    starts at once and checks on the machine's clock (the gateways' too) that what it counted fell in
    one window; a run that straddled a boundary is done again on a variant with counters of its own
    (another deployment, another key), early in the minute it just entered."""
    start = time.time()
    for variant in variants:
        start = time.time()
        result = attempt(variant)
        if time.time() // 60 == start // 60:
            return result
    raise AssertionError(f"every run straddled a minute boundary (the last took {time.time() - start:.0f} s)")


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


def text_stream_frame(types: Sequence[str]) -> None:
    """A Responses stream of one text message opens and closes in OpenAI's order (its deltas between)."""
    assert list(types[:4]) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert list(types[-4:]) == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
