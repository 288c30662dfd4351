"""The OpenAI Responses and Conversations APIs (`/v1/responses`, `/v1/conversations`), served by any
provider: each turn's context is rebuilt from the gateway's own store (multihome/state/) and sent
through the same pipeline as a chat completion (items.py, translate.py, stream.py, door.py,
conversations.py). What is supported: docs/responses.md."""
