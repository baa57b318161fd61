"""Consent (opt-outs, quiet hours), personal-data hashing, retention and erasure."""
