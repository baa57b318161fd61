"""Retention (the hourly purge) and erasure of one person, across every table and Redis."""
