"""Benchmarks (``wanotify bench …``): measured through the public surface, never in tests."""
