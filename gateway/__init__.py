"""munggoggo.gateway: the ASGI gateway to the agent mesh (REST, JSON-RPC 2.0, WebSocket)."""
