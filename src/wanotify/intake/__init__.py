"""Accepting jobs: validate, store, enqueue; idempotency."""
