"""The admin API, `/admin/v1/...`: one module per resource (tenancy, keys, policies, entitlements,
budgets, revocations, usage, contracts, audit), each declaring its routes once (`route.Route`);
`registry.ROUTES` lists them all, and the dispatcher (`dispatch.AdminApi`), the OpenAPI document
(`openapi.py`), the audit event table (`events.py`) and, through the document, the CLI
(`multihome.cli.admin`) are derived from it. Adding a resource: a module here with its `ROUTES`, named in `registry.RESOURCES`, and a
line per route in docs/api.md (tests/test_docs.py checks)."""
