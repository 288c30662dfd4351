"""Live config (docs/serving.md "Reloading the config"): SIGHUP and `POST /admin/v1/config/reload` against
the real process, with the openai SDK as client. A reload in the middle of 100 open streams breaks none of
them, a new model group is served afterwards by every worker, and a file that is invalid or changes a
start-up-only section is refused while the old config keeps serving."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import openai
import pytest

from builders import (
    api_keys,
    audit,
    config,
    deployment,
    group,
    identity,
    key_budget,
    price,
    simulated,
    sqlite,
    yaml_text,
)
from multihome.audit import AuditReader, Filters

from .helpers import in_one_minute, until
from .processes import Gateway, Simulators

KEY, ADMIN = "mh-reload-client", "mh-reload-admin"
ENV = {"MH_RELOAD_CLIENT": KEY, "MH_RELOAD_ADMIN": ADMIN, "MH_RELOAD_REPLICA": "r1"}
STREAMS = 100
USER = [{"role": "user", "content": "Tell me a long story about clouds"}]


def _config(url: str, *, fresh: bool = False, audit_dir: Path | None = None, **server) -> dict:
    deployments = {"d-slow": deployment("p", "slow-model"), "d-main": deployment("p", "main-model")}
    groups = {"slow": group("d-slow", retries=0), "main": group("d-main", retries=0)}
    if fresh:
        deployments["d-fresh"] = deployment("p2", "fresh-model")
        groups["fresh"] = group("d-fresh", retries=0)
    providers = {"p": simulated("openai", url)}
    if fresh:
        providers["p2"] = simulated("openai", url)
    extra = {"audit": audit(audit_dir)} if audit_dir is not None else {}
    return config(
        **extra,
        server=api_keys("MH_RELOAD_CLIENT", **server),
        identity=identity("MH_RELOAD_ADMIN"),
        # `serve --workers` drops the replica id in each worker: a reload must not see that as a change.
        responses={"background": {"replica_id_env": "MH_RELOAD_REPLICA"}},
        providers=providers,
        deployments=deployments,
        model_groups=groups,
    )


@pytest.fixture(scope="module")
def sim():
    with Simulators() as sims:
        yield sims.start("openai", "reload-sim")


def _serves(url: str, model: str) -> bool:
    r = httpx.post(
        url + "/v1/chat/completions",
        json={"model": model, "messages": USER},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    return r.status_code == 200


async def _open_streams(url: str, opened: asyncio.Event, go_on: asyncio.Event) -> list[str]:
    """STREAMS streams on the slow group: each reads its first chunk, then all wait for `go_on` (the
    reload) before reading the rest. Returns each stream's text; any error propagates."""
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    started = 0

    async def one() -> str:
        nonlocal started
        stream = await client.chat.completions.create(model="slow", messages=USER, stream=True)
        parts: list[str] = []
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            if len(parts) == 1:
                started += 1
                if started == STREAMS:
                    opened.set()
                await go_on.wait()
        return "".join(parts)

    try:
        return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(STREAMS))), 120)
    finally:
        await client.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_mid_100_streams_breaks_none_and_serves_the_new_group(sim, tmp_path: Path, workers: int):
    sim.reset()
    # Each stream: 30 chunks 40 ms apart, so all are open while the reload happens.
    sim.fault(chunks=30, chunk_delay_ms=40, match="slow-model")
    gw = Gateway(_config(sim.url), tmp_path, ENV, "--workers", str(workers))
    try:
        assert not _serves(gw.url, "fresh")

        async def scenario() -> list[str]:
            opened, go_on = asyncio.Event(), asyncio.Event()
            streams = asyncio.ensure_future(_open_streams(gw.url, opened, go_on))
            await asyncio.wait_for(opened.wait(), 60)
            Path(gw.args[gw.args.index("--config") + 1]).write_text(yaml_text(_config(sim.url, fresh=True)))
            gw.popen.send_signal(signal.SIGHUP)
            # The new group is served (by every worker: several calls) while the old streams are still open.
            await asyncio.to_thread(until, lambda: all(_serves(gw.url, "fresh") for _ in range(6)), 30, "the new group")
            assert not streams.done(), "the streams ended before the reload was seen"
            go_on.set()
            return await streams

        texts = asyncio.run(scenario())
        assert len(texts) == STREAMS and all(texts), "every stream ran to its end with its text"
        complete = texts[0]
        assert all(t == complete for t in texts), "no stream was cut short"
        assert _serves(gw.url, "slow") and _serves(gw.url, "main")
        assert gw.popen.poll() is None
        # The parent passed SIGHUP on to every worker (the calls above may all have met one of them).
        until(lambda: gw.output().count("config reload: applied") >= workers, 60, "every worker's reload")
    finally:
        log = gw.stop()
    assert log.count("config reload: applied") == workers


def test_invalid_file_is_refused_and_the_old_config_keeps_serving(sim, tmp_path: Path):
    sim.reset()
    trail = tmp_path / "audit"
    gw = Gateway(_config(sim.url, audit_dir=trail), tmp_path, ENV)
    path = Path(gw.args[gw.args.index("--config") + 1])
    admin = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
    try:
        good = path.read_text()
        # A group naming a deployment that does not exist: the ConfigError's problem comes back as a 400.
        path.write_text(good.replace("- d-main", "- d-missing"))
        r = admin.post("/admin/v1/config/reload")
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid_config" and "d-missing" in err["message"]
        assert _serves(gw.url, "main")
        # Not YAML at all, by SIGHUP: logged, and the process goes on serving the old config.
        path.write_text("providers: [unclosed")
        gw.popen.send_signal(signal.SIGHUP)
        until(lambda: "config reload refused" in gw.output(), what="the refusal in the log")
        assert gw.popen.poll() is None and _serves(gw.url, "main")
        # A section read at start-up only: refused, naming it.
        path.write_text(yaml_text(_config(sim.url, fresh=True, audit_dir=trail, max_body_bytes=12345)))
        r = admin.post("/admin/v1/config/reload")
        assert r.status_code == 400 and "server: changed" in r.json()["error"]["message"], r.text
        assert not _serves(gw.url, "fresh")
        # Only an org admin may reload.
        path.write_text(yaml_text(_config(sim.url, fresh=True, audit_dir=trail)))
        denied = httpx.post(gw.url + "/admin/v1/config/reload", headers={"authorization": f"Bearer {KEY}"})
        assert denied.status_code in (401, 403)
        ok = admin.post("/admin/v1/config/reload")
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["changed"] is True and "fresh" in body["model_groups"] and body["id"].startswith("cfg_")
        assert _serves(gw.url, "fresh")
        again = admin.post("/admin/v1/config/reload").json()
        assert again["changed"] is False and again["id"] == body["id"]
    finally:
        admin.close()
        gw.stop()
    # Each successful reload is in the audit trail, with the file's digest; the refused ones are not.
    events = [e["body"] for _, e in AuditReader(str(trail)).iter_events(Filters(kind="admin_change"))]
    reloads = [e for e in events if e["action"] == "config.reload"]
    assert [e["object_id"] for e in reloads] == [body["id"], body["id"]], events


def test_a_reloaded_rate_limit_admits_exactly_its_count(sim, tmp_path: Path):
    """Limits change live: a deployment's rate limit lowered by a reload admits its new count, then 429.
    Rate windows are UTC minutes: a run that straddles one is done again on the other deployment."""
    sim.reset()
    cfg = _config(sim.url)

    def limits(rpm: dict[str, int]) -> dict:
        rules = [{"scope": "deployment", "id": d, "requests_per_minute": n} for d, n in rpm.items()]
        return {**cfg, "metering": {"rate_limits": rules}}

    gw = Gateway(limits({"d-main": 1000, "d-slow": 1000}), tmp_path, ENV)
    path = Path(gw.args[gw.args.index("--config") + 1])

    def attempt(variant: tuple[str, str]) -> list[bool]:
        deployment, group_name = variant
        assert all(_serves(gw.url, group_name) for _ in range(3))
        path.write_text(yaml_text(limits({"d-main": 1000, "d-slow": 1000, deployment: 5})))
        r = httpx.post(gw.url + "/admin/v1/config/reload", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
        assert r.status_code == 200 and r.json()["changed"], r.text
        # The minute's counter holds the 3 calls before the reload: 2 more are admitted, then none.
        return [_serves(gw.url, group_name) for _ in range(4)]

    try:
        answers = in_one_minute(attempt, [("d-main", "main"), ("d-slow", "slow")])
        assert answers == [True, True, False, False], answers
    finally:
        gw.stop()


def test_the_admin_call_with_two_workers_reloads_every_worker(sim, tmp_path: Path):
    """docs/serving.md: the admin call is answered by one worker after it applied the file, then the parent
    passes SIGHUP on and the other worker follows. Each worker logs its reload: two `applied`."""
    sim.reset()
    gw = Gateway(_config(sim.url), tmp_path, ENV, "--workers", "2")
    try:
        # Both workers up first: one that reads the file after the change below has nothing to reload.
        until(lambda: gw.output().count("multihome listening") >= 2, 120, "both workers' start-up")
        assert not _serves(gw.url, "fresh")
        Path(gw.args[gw.args.index("--config") + 1]).write_text(yaml_text(_config(sim.url, fresh=True)))
        ok = httpx.post(gw.url + "/admin/v1/config/reload", headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert ok.status_code == 200 and ok.json()["changed"] is True, ok.text
        until(lambda: gw.output().count("config reload: applied") >= 2, 60, "both workers' reloads")
        assert all(_serves(gw.url, "fresh") for _ in range(6))
    finally:
        log = gw.stop()
    assert log.count("config reload: applied") == 2 and "config reload refused" not in log


def test_reloaded_budgets_count_what_was_spent(sim, tmp_path: Path):
    """docs/serving.md "Budgets and rate limits": a changed amount keeps what was spent, and a new budget's
    counters start from the period's stored usage. Two keys spend about $9 each (10 cents a token); a reload
    lowers the first one's $1000 budget to $5 and gives the second, unbudgeted, a new $5 one: both are then
    refused, though a call's reservation (about $3) fits in $5 on its own."""
    sim.reset()
    env = {**ENV, "MH_RELOAD_SECOND": "mh-reload-second-key", "MH_RELOAD_FRESH": "mh-reload-fresh-key"}
    keys = {"first": KEY, "second": env["MH_RELOAD_SECOND"]}

    def budgeted(first: str, second: str | None) -> dict:
        cfg = _config(sim.url)
        cfg["server"]["api_keys_env"] = ["MH_RELOAD_CLIENT", "MH_RELOAD_SECOND", "MH_RELOAD_FRESH"]
        cfg["storage"] = sqlite(tmp_path / "mh.db")
        cfg["deployments"]["d-main"]["price"] = price(100_000, 100_000)
        budgets = [key_budget("MH_RELOAD_CLIENT", first)]
        if second is not None:
            budgets += [key_budget("MH_RELOAD_SECOND", second), key_budget("MH_RELOAD_FRESH", second)]
        cfg["metering"] = {"budgets": budgets}
        return cfg

    gw = Gateway(budgeted("1000", None), tmp_path, env)
    admin = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)
    try:
        clients = {
            n: openai.OpenAI(base_url=gw.url + "/v1", api_key=k, max_retries=0, timeout=30) for n, k in keys.items()
        }
        spent = {}
        for name, client in clients.items():
            spent[name] = sum(
                client.chat.completions.create(model="main", messages=USER).usage.total_tokens * 0.1 for _ in range(5)
            )
            assert spent[name] > 6, spent  # well past the $5 below, and past a reservation
        until(lambda: _stored_calls(admin) >= 10, 30, "the 10 usage rows")

        Path(gw.args[gw.args.index("--config") + 1]).write_text(yaml_text(budgeted("5", "5")))
        assert admin.post("/admin/v1/config/reload").json()["changed"] is True
        for name, client in clients.items():
            with pytest.raises(openai.RateLimitError) as refused:
                client.chat.completions.create(model="main", messages=USER, max_tokens=1)
            assert refused.value.code == "budget_exceeded", (name, refused.value.body)
        # The control: a key that spent nothing, under the same new $5 budget, is admitted.
        fresh = openai.OpenAI(base_url=gw.url + "/v1", api_key=env["MH_RELOAD_FRESH"], max_retries=0, timeout=30)
        assert fresh.chat.completions.create(model="main", messages=USER, max_tokens=1).choices
    finally:
        admin.close()
        gw.stop()


def _stored_calls(admin: httpx.Client) -> int:
    data = admin.get("/admin/v1/usage", params={"group_by": "deployment"}).json()["data"]
    return sum(row["calls"] for row in data)
