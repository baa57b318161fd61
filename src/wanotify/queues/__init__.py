"""Celery's app, its queues and task names, and every send_task (producers need only this)."""
