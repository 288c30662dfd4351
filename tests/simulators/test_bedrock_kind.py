"""The bedrock simulator, checked with botocore's own bedrock-runtime client (its SigV4 signer,
rest-json parser and event-stream decoder) so the wire format is AWS's, not ours."""

from __future__ import annotations

import datetime
import json

import botocore.session
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError

from multihome.simulators import SimulatorConfig, start_simulator_in_thread
from multihome.simulators.bedrock import eventstream as es
from multihome.simulators.bedrock.sigv4 import Secret, verify

AKID, SECRET, REGION = "AKIDSIMTEST", "sim-secret", "us-east-1"
MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
USER = [{"role": "user", "content": [{"text": "hello"}]}]


@pytest.fixture(scope="module")
def bedrock_sim():
    sim = start_simulator_in_thread(
        SimulatorConfig(
            kind="bedrock", name="bedrock-sim", region=REGION, aws_access_key_id=AKID, aws_secret_access_key=SECRET
        )
    )
    yield sim
    sim.close()


@pytest.fixture
def bsim(bedrock_sim):
    bedrock_sim.reset()
    return bedrock_sim


def client(sim, secret=SECRET, region=REGION, akid=AKID):
    return botocore.session.Session().create_client(
        "bedrock-runtime",
        region_name=region,
        endpoint_url=sim.url,
        aws_access_key_id=akid,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"max_attempts": 0}),
    )


def test_converse_with_botocore(bsim):
    r = client(bsim).converse(
        modelId=MODEL, messages=USER, system=[{"text": "be nice"}], inferenceConfig={"maxTokens": 100}
    )
    assert r["output"]["message"]["content"] == [{"text": "Hello from bedrock-sim. You said: hello"}]
    assert (
        r["stopReason"] == "end_turn"
        and r["usage"]["totalTokens"] == r["usage"]["inputTokens"] + r["usage"]["outputTokens"]
    )
    assert bsim.requests(1)[0]["path"] == "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"


def test_converse_stream_decodes_with_botocore(bsim):
    tools = {
        "tools": [
            {
                "toolSpec": {
                    "name": "a",
                    "inputSchema": {
                        "json": {"type": "object", "properties": {"q": {"type": "string", "minLength": 20}}}
                    },
                }
            }
        ]
    }
    events = list(client(bsim).converse_stream(modelId=MODEL, messages=USER, toolConfig=tools)["stream"])
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]
    args = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e)
    assert json.loads(args) == {"q": ("example" * 3)[:20]}
    assert sum(1 for n in names if n == "contentBlockDelta") > 1  # arguments arrive in several deltas
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"


@pytest.mark.parametrize(
    "secret, region, akid, error",
    [
        ("wrong", REGION, AKID, "InvalidSignatureException"),
        (SECRET, "eu-west-1", AKID, "InvalidSignatureException"),
        (SECRET, REGION, "AKIDUNKNOWN", "UnrecognizedClientException"),
    ],
)
def test_wrong_signature_is_rejected_as_aws_does(bsim, secret, region, akid, error):
    with pytest.raises(ClientError) as err:
        client(bsim, secret, region, akid).converse(modelId=MODEL, messages=USER)
    assert err.value.response["Error"]["Code"] == error
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert bsim.stats()["errors"] == 1


def test_missing_auth_and_tampered_body(bsim):
    r = httpx.post(bsim.url + "/model/m/converse", json={"messages": USER})
    assert r.status_code == 403 and r.headers["x-amzn-ErrorType"].startswith("MissingAuthenticationTokenException")
    assert r.json() == {"message": "Missing Authentication Token"}
    url = bsim.url + "/model/m/converse"
    req = AWSRequest("POST", url, data=b'{"messages":[]}', headers={"content-type": "application/json"})
    SigV4Auth(Credentials(AKID, SECRET), "bedrock", REGION).add_auth(req)
    r = httpx.post(url, content=json.dumps({"messages": USER}), headers=dict(req.headers.items()))
    assert r.status_code == 403 and r.headers["x-amzn-ErrorType"].startswith("InvalidSignatureException")


def test_expired_signature():
    req = AWSRequest("POST", "http://h/model/m/converse", data=b"{}", headers={"host": "h"})
    SigV4Auth(Credentials(AKID, SECRET), "bedrock", REGION).add_auth(req)
    headers = {k.lower(): v for k, v in req.headers.items()}
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=6)
    failure = verify(
        "POST",
        "/model/m/converse",
        headers,
        b"{}",
        keys={AKID: Secret(SECRET, None)},
        region=REGION,
        service="bedrock",
        now=later,
    )
    assert failure.error_type == "InvalidSignatureException" and failure.message.startswith("Signature expired")
    assert (
        verify(
            "POST",
            "/model/m/converse",
            headers,
            b"{}",
            keys={AKID: Secret(SECRET, None)},
            region=REGION,
            service="bedrock",
        )
        is None
    )


@pytest.mark.parametrize(
    "fault, code, status",
    [
        ({"throttle": 1}, "ThrottlingException", 429),
        ({"status": 503}, "ServiceUnavailableException", 503),
        ({"status": 500}, "InternalServerException", 500),
        ({"status": 400}, "ValidationException", 400),
        ({"status": 408}, "ModelTimeoutException", 408),
        ({"status": 403}, "AccessDeniedException", 403),
    ],
)
def test_fault_knobs_use_bedrock_exceptions(bsim, fault, code, status):
    bsim.set_fault({**fault, "times": 1})
    with pytest.raises(ClientError) as err:
        client(bsim).converse(modelId=MODEL, messages=USER)
    assert (
        err.value.response["Error"]["Code"] == code
        and err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    )


def test_validation_matches_bedrock_rules(bsim):
    c = client(bsim)
    for messages, words in [
        ([{"role": "assistant", "content": [{"text": "x"}]}], "start with a user message"),
        ([{"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}], "alternate"),
        (
            [{"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": [{"text": "r"}]}}]}],
            "toolConfig field must be defined",
        ),
    ]:
        with pytest.raises(ClientError) as err:
            c.converse(modelId=MODEL, messages=messages)
        assert (
            err.value.response["Error"]["Code"] == "ValidationException"
            and words in err.value.response["Error"]["Message"]
        )


def test_malformed_frame_has_bad_crc(bsim):
    bsim.set_fault({"malformed_at": 2, "chunk_delay_ms": 1, "times": 1})
    stream = client(bsim).converse_stream(modelId=MODEL, messages=USER)["stream"]
    with pytest.raises(Exception) as err:
        list(stream)
    assert "Checksum" in type(err.value).__name__ or "checksum" in str(err.value).lower()


def test_guardrail_and_content_filter(bsim):
    bsim.set_fault({"content_filter": "prompt", "times": 1})
    r = client(bsim).converse(modelId=MODEL, messages=USER)
    assert r["stopReason"] == "guardrail_intervened"
    bsim.set_fault({"content_filter": "output", "times": 1})
    assert client(bsim).converse(modelId=MODEL, messages=USER)["stopReason"] == "content_filtered"


def test_invoke_model_embeddings(bsim):
    c = client(bsim)
    titan = json.loads(
        c.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": "hi", "dimensions": 512}))[
            "body"
        ].read()
    )
    assert len(titan["embedding"]) == 512 and titan["inputTextTokenCount"] == 1
    cohere = json.loads(
        c.invoke_model(
            modelId="cohere.embed-english-v3", body=json.dumps({"texts": ["a", "b"], "input_type": "search_query"})
        )["body"].read()
    )
    assert len(cohere["embeddings"]) == 2
    with pytest.raises(ClientError):
        c.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"texts": ["a"]}))


def test_encoder_round_trips_through_botocore():
    frames = es.event("contentBlockDelta", {"delta": {"text": "hé"}}) + es.exception("throttlingException", "slow down")
    buf = EventStreamBuffer()
    buf.add_data(frames[:7])
    assert list(buf) == []
    buf.add_data(frames[7:])
    first, second = list(buf)
    assert first.headers[":event-type"] == "contentBlockDelta" and json.loads(first.payload) == {
        "delta": {"text": "hé"}
    }
    assert second.headers[":message-type"] == "exception" and second.to_response_dict()["status_code"] == 400
    bad = EventStreamBuffer()
    bad.add_data(es.event("x", {}, corrupt=True))
    with pytest.raises(Exception, match="[Cc]hecksum"):
        list(bad)
    assert EventStreamError  # botocore's exception type for exception frames exists in this version


def test_sts_assume_role_issues_working_temporary_credentials(bsim):
    sts = botocore.session.Session().create_client(
        "sts", region_name=REGION, endpoint_url=bsim.url, aws_access_key_id=AKID, aws_secret_access_key=SECRET
    )
    creds = sts.assume_role(RoleArn="arn:aws:iam::1:role/r", RoleSessionName="sess")["Credentials"]
    session = botocore.session.Session()
    c = session.create_client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=bsim.url,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    assert c.converse(modelId=MODEL, messages=USER)["stopReason"] == "end_turn"
    bad = session.create_client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=bsim.url,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token="forged",
    )
    with pytest.raises(ClientError):
        bad.converse(modelId=MODEL, messages=USER)
