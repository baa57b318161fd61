"""``queues.app.follow_settings``: a process that moves the Celery app to another Redis (the
benchmarks do it once per run, the test session once) can still publish afterwards."""

from __future__ import annotations

from typing import Any

from wanotify.queues.app import celery_app, follow_settings


def test_publishing_works_after_following_the_settings_twice(redis_client: Any) -> None:
    """A second `bench pacing` run in one process failed with "Acquire on closed pool" at its
    first kick: the producer pool still held the connections the first run had closed."""
    queue = "wn-test-follow"
    redis_client.delete(queue)
    try:
        for _ in range(2):
            follow_settings()
            celery_app.send_task("wanotify.test-follow", args=[1], queue=queue)
        assert redis_client.llen(queue) == 2
    finally:
        redis_client.delete(queue)
