"""The send path: lanes (Lua), pacing, dispatcher, outcomes, fallback, sweeper."""
