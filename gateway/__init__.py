"""munggoggo.gateway: the ASGI gateway to the agent mesh (REST, JSON-RPC 2.0, WebSocket)."""

from munggoggo.extras import require

# granian serves the gateway and prometheus_client keeps its metrics: without the extra,
# importing any part of the gateway is one clear MissingExtra (an ImportError).
require("gateway", "munggoggo.gateway")
