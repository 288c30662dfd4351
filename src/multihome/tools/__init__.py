"""Tools a model may call that Multihome runs itself: MCP servers an admin registered per tenant.

`servers.py` keeps the registry (table `mcp_servers`, headers sealed under the tenant's key),
`spec.py` checks what may be registered (URLs, headers, tool filters, approval rules),
`resolver.py` turns a Responses request's `mcp` tool into a registered server (or a 400: no SSRF),
`mcp_client.py` talks to a server over streamable HTTP with the official `mcp` SDK (`model.py`: what
it shares with the rest, without importing the SDK), and `names.py`
maps MCP tool names to OpenAI function names and back (docs/agents.md "MCP servers").
"""
