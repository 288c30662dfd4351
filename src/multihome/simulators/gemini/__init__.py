"""The Google simulator for both the Gemini API (`gemini` kind, API key) and Vertex AI (`vertex` kind,
OAuth bearer): `api.py` routes generateContent, streamGenerateContent and embeddings; `convert.py`
translates bodies."""
