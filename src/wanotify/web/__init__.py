"""The FastAPI app: API, Meta's webhook, health and metrics."""
