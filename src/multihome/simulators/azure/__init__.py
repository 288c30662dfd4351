"""The Azure OpenAI simulator (`azure` kind): `api.py` serves deployment URLs (with api-version) and
the /openai/v1/ form, checks an api-key or an Entra bearer token, and adds content-filter results."""
