"""Azure AI model inference end to end: the real gateway process in front of the azure_inference
simulator (Foundry's model catalogue), the official openai SDK as the client, with
examples/foundry-models.yaml pointed at simulators; Entra ID through azure-identity."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from builders import deployment, group, simulated

from . import stacks
from .processes import Simulator
from .stacks import gateway_stack
from .test_entra import TOKEN, _TokenEndpoint, managed_identity

sims, client = stacks.sims, stacks.client  # fixtures: each test's cleared simulators and SDK client

ROOT = Path(__file__).resolve().parents[2]
CLIENT_KEY = "mh-inference-client-key"
KEY = "foundry-models-key-0123"
USER = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inference")
    with managed_identity() as identity_env:
        secrets = {"SIM_KEY": KEY, "SIM_TOKEN": TOKEN}
        with gateway_stack(CLIENT_KEY, secrets=(KEY, TOKEN)) as s:
            sims = s.sims
            sims["foundry-models"] = Simulator(
                "azure_inference", "inference-sim", "--api-key-env", "SIM_KEY", env=secrets
            )
            sims["vllm"] = Simulator("openai", "vllm-sim")
            sims["entra"] = Simulator(
                "azure_inference", "inference-entra", "--entra-token-env", "SIM_TOKEN", env=secrets
            )
            cfg = yaml.safe_load((ROOT / "examples/foundry-models.yaml").read_text())
            cfg["server"] = {"api_keys_env": ["MULTIHOME_API_KEY"]}
            cfg["providers"]["foundry-models"]["endpoint"] = sims["foundry-models"].url + "/models"
            cfg["providers"]["vllm"]["endpoint"] = sims["vllm"].url + "/v1"
            cfg["providers"]["entra"] = simulated("azure_inference", sims["entra"].url + "/models", auth={"entra": {}})
            cfg["deployments"]["llama@entra"] = deployment("entra", "Llama-3.3-70B-Instruct")
            cfg["model_groups"]["llama-entra"] = group("llama@entra", retries=0)
            s.start(cfg, tmp, {"MULTIHOME_API_KEY": CLIENT_KEY, "FOUNDRY_MODELS_KEY": KEY, **identity_env})
            yield s


def test_chat_reaches_the_model_inference_api(client, sims):
    raw = client.chat.completions.with_raw_response.create(model="llama-3.3-70b", messages=USER, logprobs=True)
    assert raw.headers["x-multihome-deployment"] == "llama@foundry"
    assert "Hello there" in (raw.parse().choices[0].message.content or "")
    sent = sims["foundry-models"].requests()
    assert [(r["path"], r["model"], r["auth"]) for r in sent] == [
        ("/models/chat/completions", "Llama-3.3-70B-Instruct", True)
    ]


def test_stream_with_usage(client, sims):
    stream = client.chat.completions.create(
        model="deepseek-v3", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "Hello there" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert all(c.choices or c.usage for c in chunks), "Azure's prompt-filter prelude chunk is not forwarded"


def test_embeddings(client, sims):
    result = client.embeddings.create(model="cohere-embed", input=["one", "two"])
    assert [d.index for d in result.data] == [0, 1]
    assert [r["path"] for r in sims["foundry-models"].requests()] == ["/models/embeddings"]


def test_fails_over_to_self_hosted(client, sims):
    sims["foundry-models"].fault(status=503)
    raw = client.chat.completions.with_raw_response.create(model="llama-3.3-70b", messages=USER)
    assert raw.headers["x-multihome-deployment"] == "llama@vllm"


def test_entra_id_token_from_azure_identity(client, sims):
    reply = client.chat.completions.create(model="llama-entra", messages=USER)
    assert "Hello there" in (reply.choices[0].message.content or "")
    assert _TokenEndpoint.calls and _TokenEndpoint.calls[-1]["resource"] == "https://cognitiveservices.azure.com"
