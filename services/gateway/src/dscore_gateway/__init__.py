"""dscore-gateway: the client HTTP API (see the service README)."""
