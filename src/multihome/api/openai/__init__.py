"""The OpenAI-compatible front door: chat.py (`/v1/chat/completions`), embeddings.py
(`/v1/embeddings`), models.py (`/v1/models`), explain.py (`/v1/route/explain`), and errors.py,
OpenAI's error envelope, which every route outside the Anthropic door answers in."""
