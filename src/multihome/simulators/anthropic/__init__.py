"""The Anthropic Messages simulator (`anthropic` kind): `api.py` routes and checks x-api-key; `wire.py`
turns Messages bodies into the shared chat plan and the plan into Messages answers and SSE events."""
