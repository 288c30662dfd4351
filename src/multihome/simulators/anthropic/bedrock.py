"""The ``bedrock_anthropic`` kind: Claude on Amazon Bedrock through InvokeModel.

It is Bedrock itself (``simulators/bedrock/api.py``): the same endpoint serves Converse and
InvokeModel, and answers InvokeModel on a Claude model id (or a cross-region inference profile of
one) with Anthropic's Messages body (``simulators/bedrock/invoke.py``). This kind only names it,
mirroring ``providers/anthropic/`` where the gateway's ``bedrock_anthropic`` adapter lives.
"""

from __future__ import annotations

from ..bedrock.api import BedrockApp


class BedrockAnthropicApp(BedrockApp):
    kind = "bedrock_anthropic"
