"""AWS Bedrock Runtime: Converse / ConverseStream for chat, InvokeModel for embeddings (`bedrock`
kind); and Bedrock's OpenAI-compatible Chat Completions endpoint for OpenAI's open-weight models
(`bedrock_openai` kind, `openai_compat.py`: `POST /openai/v1/chat/completions`, bodies passed through).

`request.py` turns an OpenAI chat body into a Converse body, `response.py` a Converse answer into
a chat.completion, `stream.py` decodes ConverseStream event-stream frames into chunks,
`embeddings.py` speaks InvokeModel for Titan and Cohere, `../aws.py` signs (SigV4 or a Bedrock API
key); `adapter.py` holds the URLs and error classification.
"""

from __future__ import annotations

from ..kind import ProviderKind, zone_by_prefix


def _public_endpoint(region: str | None) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


# Cross-region inference profiles: the prefix of the profile id names the geography Bedrock may
# route the call to (docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-support.html),
# and the source region the call is sent to must lie in it. (prefix, data zone, source regions)
PROFILES = (
    ("us-gov.", "US", ("us-gov-",)),
    ("us.", "US", ("us-",)),
    ("eu.", "EU", ("eu-",)),
    ("apac.", "APAC", ("ap-",)),
    ("jp.", "JP", ("ap-northeast-1", "ap-northeast-3")),
    ("au.", "AU", ("ap-southeast-2", "ap-southeast-4")),
    ("global.", "Global", ("",)),  # any commercial region may serve it
)
# A base model id (no profile) is served in the region it is sent to.
_REGION_ZONES = (("us-gov-", "US"), ("us-", "US"), ("eu-", "EU"), ("ap-", "APAC"))


def profile_id(model: str) -> str:
    """The inference profile id of `model`, also when it is given as an ARN
    (arn:aws:bedrock:{region}:{account}:inference-profile/{id})."""
    return model.rpartition("inference-profile/")[2] if model.startswith("arn:") else model


def data_zone(region: str | None, model: str) -> str | None:
    """Where Bedrock processes a call to `model` sent to `region` (ProviderKind.data_zone)."""
    profile = profile_id(model)
    for prefix, zone, sources in PROFILES:
        if profile.startswith(prefix):
            if region and not region.startswith(sources):
                where = " or ".join(s + "*" if s.endswith("-") else s for s in sources)
                raise ValueError(
                    f"'{model}' is a {prefix} cross-region inference profile; Bedrock serves it only from a "
                    f"source region in its geography ({where}), not from '{region}'"
                )
            return zone
    if model.startswith("arn:") and ":application-inference-profile/" in model:
        return None  # an application profile may copy any system profile: its zone is not in its name
    return zone_by_prefix(region, _REGION_ZONES)


KIND = ProviderKind(
    name="bedrock",
    title="AWS Bedrock",
    telemetry_name="aws.bedrock",
    auth_methods=("api_key_env", "aws"),
    adapter="multihome.providers.bedrock.adapter",
    requires=("region",),
    default_endpoint=_public_endpoint,
    data_zone=data_zone,
    service_tier=False,  # the translation drops it: the standard tier
)

OPENAI = ProviderKind(
    name="bedrock_openai",
    title="Amazon Bedrock OpenAI Chat Completions",
    telemetry_name="aws.bedrock",
    auth_methods=("api_key_env", "aws"),
    adapter="multihome.providers.bedrock.openai_compat",
    requires=("region",),
    default_endpoint=_public_endpoint,
    data_zone=data_zone,
)
