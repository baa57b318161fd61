"""`wanotify worker`: what it adds to `celery worker`."""

from __future__ import annotations


def test_an_intake_only_worker_is_recognised_in_every_spelling_of_its_queues() -> None:
    """`wanotify worker --queues notify` lowers its priority (cli.processes.INTAKE_NICE); a
    worker that also sends (any other queue named, or none: every queue) does not."""
    from wanotify.cli.processes import queues_of

    assert queues_of(["--queues", "notify"]) == ["notify"]
    assert queues_of(["-Q", "notify"]) == ["notify"]
    assert queues_of(["--queues=notify", "-c", "4"]) == ["notify"]
    assert queues_of(["-Qnotify"]) == ["notify"]
    assert queues_of(["--queues", "notify,otp"]) == ["notify", "otp"]
    assert queues_of(["-c", "4"]) is None
