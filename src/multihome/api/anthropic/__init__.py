"""The Anthropic-compatible front door (`POST /v1/messages`, `POST /v1/messages/count_tokens`):
routes.py (parse -> pipeline -> render), translate.py (Messages <-> canonical chat, unary),
stream.py (chat chunks -> Messages SSE events), errors.py (Anthropic's error envelope)."""
