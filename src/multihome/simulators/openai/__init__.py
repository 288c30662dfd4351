"""The OpenAI simulator (`openai` kind): `api.py` serves /v1/chat/completions, /v1/embeddings and
/v1/models on the shared pipeline in `simulators/app.py`."""
