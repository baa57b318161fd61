"""One router per resource of the HTTP API (stable paths: see the README)."""
