"""Front doors: the OpenAI-compatible API (and later admin API and dashboard)."""
