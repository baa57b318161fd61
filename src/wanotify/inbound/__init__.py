"""Meta's webhooks: parse (pure) and ingest (inbox, spool, set-based apply)."""
