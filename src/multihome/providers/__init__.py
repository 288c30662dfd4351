"""One folder per upstream API kind (`openai/`, `azure/`, `bedrock/`, `anthropic/`, `gemini/`), each
with its `KIND` descriptor, listed in `registry.py`; the pieces they share sit beside them (`base.py`
the interface, `passthrough.py`, `canonical_in.py`, `openai_out.py`, `sse.py`, `errors.py`,
`transport.py`). Adapters translate and classify; they know nothing of tenants.
See docs/adding-a-provider.md.
"""
