"""The HTTP side of the gateway. Where a model call goes, one file per step:

- routes.py      the route table: which handler a (method, path) reaches, 404/405, which API family
- gateway.py     the ASGI entry: lifespan, identify (identity/authenticator.py), one error path, settle
- openai/chat.py, openai/embeddings.py, anthropic/routes.py
                 the front doors: parse the wire format -> Pipeline.run -> render the answer
- pipeline.py    the Call, and the middle every door shares: model group, decide (policy_gate.py),
                 plan and attempt (routing/router.py, planner.py, attempts.py), account (accounting/tracker.py)
- render.py      sending: served headers, JSON, SSE streams, errors in the family's envelope
                 (openai/errors.py, anthropic/errors.py)
- access_log.py  one line per call; drain.py the graceful stop; head_limit.py the bounded request head
- admin_*.py     the admin API under /admin/v1/; public_openapi.py the client-facing OpenAPI document
"""
