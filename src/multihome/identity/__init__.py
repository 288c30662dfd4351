"""Who is calling: API keys now; tenants, OIDC and RBAC grow here."""
