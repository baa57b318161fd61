"""Campaigns: service (create, audience, state changes), fan-out, cron schedules."""
