"""Global per-number pacing state in Redis: the lanes, the GCRA release (Lua), the daily tier."""
