"""`multihome demo`: the gateway in front of four simulated clouds, a failover to watch, and the product
around it in the console.

Everything runs in one process on loopback: two Azure OpenAI regions (East US, the primary, and West
Europe), OpenAI, and a self-hosted OpenAI-compatible server. The gateway runs with the embedded store
(one SQLite file), metering with prices and limits, a signed audit trail and contracts, all in a fresh
directory per run; a sample organisation is made through the admin API and a little traffic driven
through it (demo/org.py), so the console (`/console`) shows routing, spend, policy, contracts and audit.
Provider keys, the admin key and the audit signing key are drawn per run and live only in this process's
environment, as real deployments would take them from the environment.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

DEMO_KEY = "mh-demo-key"
ADMIN_KEY_ENV = "MULTIHOME_DEMO_ADMIN_KEY"

_CONFIG = """\
# Written by `multihome demo`. Provider keys come from environment variables, never this file.
server:
  host: 127.0.0.1
  port: {port}
  api_keys_env: [MULTIHOME_DEMO_CLIENT_KEY]

storage:
  url: sqlite+aiosqlite:///{workdir}/multihome.sqlite   # the embedded store: tenants, keys, usage, ledger

identity:
  admin_key_env: MULTIHOME_DEMO_ADMIN_KEY     # the bootstrap org-admin key (the console's login)

audit:
  dir: {workdir}/audit
  signing_key_env: MULTIHOME_DEMO_AUDIT_KEY
  checkpoint_every_s: 1

metrics:
  enabled: true   # GET /metrics, for a Prometheus on this machine (access: loopback)

metering:
  rate_limits:
    - {{scope: tenant, id: "*", requests_per_minute: 600}}

contracts:
  revenue_share:
    - id: rs-openai-resale
      parties: [Contoso, OpenAI reseller]
      rate: "0.15"
      basis: {{providers: [openai]}}
      starts_on: {start}
      ends_on: {end}
      cap: "0.0002"   # simulated calls cost fractions of a cent: a cap the demo's traffic heads for
  commitments:
    - id: azure-commit
      provider: azure-eastus
      amount: "0.002"
      starts_on: {start}
      ends_on: {end}

providers:
  azure-eastus:
    kind: azure
    endpoint: {azure}
    region: eastus
    data_zone: US
    api_version: "2024-10-21"
    auth: {{api_key_env: MULTIHOME_DEMO_AZURE_KEY}}
  azure-westeurope:
    kind: azure
    endpoint: {azure_eu}
    region: westeurope
    data_zone: EU
    api_version: "2024-10-21"
    auth: {{api_key_env: MULTIHOME_DEMO_AZURE_EU_KEY}}
  openai:
    kind: openai
    endpoint: {openai}/v1
    region: us
    data_zone: US
    auth: {{api_key_env: MULTIHOME_DEMO_OPENAI_KEY}}
  selfhosted:
    kind: openai
    endpoint: {selfhosted}/v1

deployments:
  gpt-4o@azure-eastus:
    provider: azure-eastus
    model: gpt-4o-prod
    context_window: 128000
    price: {{input: 2.50, output: 10.00}}
    commitment: azure-commit
  gpt-4o@openai:
    provider: openai
    model: gpt-4o
    context_window: 128000
    price: {{input: 2.50, output: 10.00}}
  gpt-4o@azure-westeurope:
    provider: azure-westeurope
    model: gpt-4o-prod
    context_window: 128000
    price: {{input: 2.75, output: 11.00}}
  gpt-4o-mini@openai:
    provider: openai
    model: gpt-4o-mini
    context_window: 128000
    price: {{input: 0.15, output: 0.60}}
  llama-3.1-8b@selfhosted:
    provider: selfhosted
    model: meta-llama/Llama-3.1-8B-Instruct
    capabilities: [chat, streaming, tools]
    context_window: 32768
  embed-small@azure-eastus:
    provider: azure-eastus
    model: text-embedding-3-small
    capabilities: [embeddings]
  embed-small@openai:
    provider: openai
    model: text-embedding-3-small
    capabilities: [embeddings]
    price: {{input: 0.02, output: 0}}

model_groups:
  gpt-4o:
    deployments: [gpt-4o@azure-eastus, gpt-4o@openai, gpt-4o@azure-westeurope, llama-3.1-8b@selfhosted]
    retries: 1
    backoff_ms: 50
  gpt-4o-mini:
    deployments: [gpt-4o-mini@openai]
    requires_entitlement: true   # a tenant needs an entitlement (the demo grants Acme an exclusive one)
  llama-3.1-8b:
    deployments: [llama-3.1-8b@selfhosted]
  text-embedding-3-small:
    deployments: [embed-small@azure-eastus, embed-small@openai]
"""


def run_demo(*, port: int = 4000, scripted_only: bool = False) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(_demo(port, scripted_only))
    except KeyboardInterrupt:
        print("\nstopped.")
    return 0


async def _demo(port: int, scripted_only: bool) -> None:
    import uvicorn

    from ..api.drain import uvicorn_timeout
    from ..api.head_limit import protocol
    from ..app import served_app
    from ..config import parse_config
    from ..providers.transport import use_upstream_threads
    from ..simulators import SimulatorConfig, start_simulator

    started = time.perf_counter()
    keys = {name: secrets.token_urlsafe(24) for name in ("azure", "azure_eu", "openai")}
    os.environ["MULTIHOME_DEMO_AZURE_KEY"] = keys["azure"]
    os.environ["MULTIHOME_DEMO_AZURE_EU_KEY"] = keys["azure_eu"]
    os.environ["MULTIHOME_DEMO_OPENAI_KEY"] = keys["openai"]
    os.environ["MULTIHOME_DEMO_CLIENT_KEY"] = DEMO_KEY
    admin_key = os.environ[ADMIN_KEY_ENV] = "mh-demo-admin-" + secrets.token_urlsafe(18)
    os.environ["MULTIHOME_DEMO_AUDIT_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()

    azure = await start_simulator(
        SimulatorConfig(kind="azure", name="azure-eastus", api_key=keys["azure"], region="eastus")
    )
    azure_eu = await start_simulator(
        SimulatorConfig(kind="azure", name="azure-westeurope", api_key=keys["azure_eu"], region="westeurope")
    )
    openai = await start_simulator(SimulatorConfig(kind="openai", name="openai", api_key=keys["openai"]))
    selfhosted = await start_simulator(SimulatorConfig(kind="openai", name="selfhosted-vllm"))
    sims = [azure, azure_eu, openai, selfhosted]

    # A fresh embedded store and audit trail per run: the sample organisation is made anew each time.
    workdir = Path(tempfile.gettempdir()) / f"multihome-demo-{port}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    today = dt.date.today()
    text = _CONFIG.format(
        port=port,
        azure=azure.url,
        azure_eu=azure_eu.url,
        openai=openai.url,
        selfhosted=selfhosted.url,
        workdir=workdir,
        start=(today - dt.timedelta(days=30)).isoformat(),
        end=(today + dt.timedelta(days=334)).isoformat(),
    )
    config_path = workdir / "multihome-demo.yaml"
    config_path.write_text(text)
    config = parse_config(text, source=str(config_path))
    use_upstream_threads(config.server.upstream_threads)
    gateway = served_app(config)  # Ctrl-C drains like `multihome serve` (docs/serving.md)
    server = uvicorn.Server(
        uvicorn.Config(
            gateway,
            host="127.0.0.1",
            port=port,
            loop="none",
            # uvicorn's stubs: a protocol class, and an int timeout; it only calls the one (a factory works)
            # and hands the other to asyncio.timeout(), which takes a float (as cli/serve.py explains).
            http=protocol(config.server.max_header_bytes, config.server.client_idle_timeout_s),  # type: ignore[arg-type]
            lifespan="on",
            access_log=False,
            server_header=False,  # as `multihome serve` (cli/serve.py)
            log_level="warning",
            timeout_graceful_shutdown=uvicorn_timeout(config.server.drain_timeout_s),  # type: ignore[arg-type]
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # surfaces the start-up error (port taken, ...)
            raise SystemExit(f"the gateway could not start on 127.0.0.1:{port}")
        await asyncio.sleep(0.02)

    root = f"http://127.0.0.1:{port}"
    base = f"{root}/v1"
    print(_banner(base, config_path, azure.url, admin_key))
    try:
        await _show_failover(base, azure)
        await _show_org(root, admin_key)
        print(f"\nDemo ready in {time.perf_counter() - started:.1f}s.", end=" ")
        if scripted_only:
            print("Exiting (--once).")
            return
        print("The gateway keeps serving; press Ctrl-C to stop.")
        await serving
    finally:
        server.should_exit = True
        if not serving.done():
            await serving
        for sim in sims:
            await sim.close()


def _banner(base: str, config_path: Path, azure_url: str, admin_key: str = "") -> str:
    console = base.removesuffix("/v1") + "/console"
    return f"""
Multihome demo: the gateway is serving on {base}
  model groups: gpt-4o (azure-eastus -> openai -> azure-westeurope -> selfhosted), gpt-4o-mini (entitled),
                llama-3.1-8b, text-embedding-3-small
  config:       {config_path}

Point any OpenAI client at it:

  export OPENAI_BASE_URL={base}
  export OPENAI_API_KEY={DEMO_KEY}

See it in the console: {console}  (log in with the admin key)
Prometheus metrics:     {base.removesuffix("/v1")}/metrics  (from this machine)

  export MULTIHOME_URL={base.removesuffix("/v1")}
  export MULTIHOME_ADMIN_KEY={admin_key}

  curl -s $OPENAI_BASE_URL/chat/completions -H "Authorization: Bearer $OPENAI_API_KEY" \\
    -H 'Content-Type: application/json' -D - \\
    -d '{{"model":"gpt-4o","messages":[{{"role":"user","content":"Hello"}}]}}'

  # Python: this interpreter has the openai package (`make demo` installed it in .venv)
  {_python()} -c 'from openai import OpenAI; r = OpenAI().chat.completions.with_raw_response.create(model="gpt-4o", messages=[{{"role":"user","content":"Hello"}}]); print(r.headers["x-multihome-deployment"], r.parse().choices[0].message.content)'

Take the primary down and bring it back yourself:

  curl -s -X POST {azure_url}/_sim/faults -d '{{"status":503}}'
  curl -s -X DELETE {azure_url}/_sim/faults
"""


def _python() -> str:
    """The interpreter running the demo, as the user can type it: `.venv/bin/python` from the
    repository root. The system's `python` usually lacks the openai package."""
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


async def _show_org(root: str, admin_key: str) -> None:
    """The sample organisation through the admin API, then a little traffic (demo/org.py)."""
    import aiohttp

    from .org import NAMES, build_org, drive_traffic

    async with aiohttp.ClientSession() as http:
        org = await build_org(http, root, admin_key)
        await drive_traffic(http, root + "/v1", org)
    # The tenants' own names, which the CLI's --tenant takes (or the ids).
    print(
        f"\nSample organisation: tenants {', '.join(f'{NAMES[n]!r} ({t})' for n, t in org.tenants.items())}; an "
        f"EU-only policy on {NAMES['globex']}, an exclusive gpt-4o-mini entitlement and a budget on "
        f"{NAMES['acme']}; {org.calls} calls ({org.denied} denied by policy). Open the console to see them."
    )


async def _show_failover(base: str, azure) -> None:
    import aiohttp

    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Which cloud am I on?"}]}
    headers = {"authorization": f"Bearer {DEMO_KEY}"}
    async with aiohttp.ClientSession() as http:

        async def call(step: str) -> None:
            t0 = time.perf_counter()
            async with http.post(f"{base}/chat/completions", json=body, headers=headers) as resp:
                data = await resp.json()
                ms = (time.perf_counter() - t0) * 1000
                if resp.status != 200:
                    print(f"  {step:<28} HTTP {resp.status}: {data['error']['message']}")
                    return
                print(f"  {step:<28} served by {resp.headers['x-multihome-deployment']:<22} in {ms:5.1f} ms")
                print(f"  {'':<28} attempts: {resp.headers['x-multihome-attempts']}")
                print(f"  {'':<28} reply: {data['choices'][0]['message']['content']!r}")

        print("Failover, live:")
        await call("1. primary healthy")
        azure.state.set_fault({"status": 503})
        await call("2. primary returns 503")
        azure.state.clear_faults()
        azure.state.set_fault({"throttle": 1, "times": 1})
        await call("3. primary throttles once")
        azure.state.clear_faults()
        await call("4. primary recovered")
