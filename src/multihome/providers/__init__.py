"""One adapter per upstream API. Adapters translate and classify; they know nothing of tenants."""
