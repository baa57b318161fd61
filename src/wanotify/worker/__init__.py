"""Celery side: the app (explicit queues and routes), thin tasks, the sweeper."""
