"""`wanotify worker`: what it adds to `celery worker`."""

from __future__ import annotations

from typing import Any


def test_an_intake_only_worker_is_recognised_in_every_spelling_of_its_queues() -> None:
    """`wanotify worker --queues notify` lowers its priority (INTAKE_NICE); a
    worker that also sends (any other queue named, or none: every queue) does not."""
    from wanotify.worker.options import queues_of

    assert queues_of(["--queues", "notify"]) == ["notify"]
    assert queues_of(["-Q", "notify"]) == ["notify"]
    assert queues_of(["--queues=notify", "-c", "4"]) == ["notify"]
    assert queues_of(["-Qnotify"]) == ["notify"]
    assert queues_of(["--queues", "notify,otp"]) == ["notify", "otp"]
    assert queues_of(["-c", "4"]) is None


def test_the_intake_child_is_named_after_its_worker_and_keeps_its_log_level() -> None:
    """`wanotify worker` (every queue) starts `wanotify worker --queues notify` beside it: a
    node name of its own (Flower tells them apart), the parent's log level and task events,
    never its beat, pid file or concurrency."""
    import sys

    from wanotify.worker.intake_process import child_command, child_node_name

    assert child_node_name(["-n", "w1@%h"]) == "intake-w1@%h"
    assert child_node_name(["--hostname=w2@box"]) == "intake-w2@box"
    assert child_node_name(["-nw3@%h"]) == "intake-w3@%h"
    assert child_node_name(["-c", "4"]) == "intake-celery@%h"
    assert child_node_name(["-n", "host7"]) == "intake-celery@host7"
    cmd = child_command(["-n", "w1@%h", "-B", "--pidfile", "/run/w.pid", "-c", "16", "-l", "DEBUG",
                         "--task-events"], "notify")
    assert cmd[:3] == [sys.executable, "-m", "wanotify"]
    rest = cmd[3:]
    assert rest[:3] == ["worker", "--queues", "notify"]
    assert "intake-w1@%h" in rest and ["--loglevel", "DEBUG"] == rest[rest.index("--loglevel"):][:2]
    assert "--task-events" in rest
    assert not {"-B", "--pidfile", "/run/w.pid", "16"} & set(rest)


def test_a_dead_intake_child_is_started_again_and_stopped_with_the_worker(tmp_path: Any) -> None:
    """Real child processes: one that exits is started again after the pause; stop() sends
    SIGTERM and waits; after stop nothing is started again."""
    import sys
    import time

    from wanotify.worker.intake_process import IntakeProcess

    marker = tmp_path / "starts"
    script = ("import os, sys, time; open(sys.argv[1], 'a').write('x');"
              " time.sleep(0.2 if os.path.getsize(sys.argv[1]) < 3 else 60)")
    ip = IntakeProcess([sys.executable, "-c", script, str(marker)], restart_pause_s=(0.1, 0.2))
    ip.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not marker.exists() or marker.stat().st_size < 3):
        time.sleep(0.05)
    assert marker.read_text() == "xxx", "the child was not started again after it exited"
    time.sleep(0.3)
    proc = ip.proc
    assert proc is not None and proc.poll() is None  # the third one keeps running
    code = ip.stop(wait_s=10)
    assert code == -15  # SIGTERM
    time.sleep(0.5)
    assert marker.read_text() == "xxx" and ip.starts == 3  # not started again after stop


def test_one_parser_reads_celery_worker_options_as_celery_does() -> None:
    from wanotify.worker.options import option_value

    assert option_value(["-P", "prefork"], "-P", "--pool") == "prefork"
    assert option_value(["-Pprefork"], "-P", "--pool") == "prefork"
    assert option_value(["--pool", "solo"], "-P", "--pool") == "solo"
    assert option_value(["--pool=gevent", "-P", "threads"], "-P", "--pool") == "threads"  # the last wins
    assert option_value(["--concurrency", "4"], "-P", "--pool") is None
    assert option_value(["--pool"], "-P", "--pool") is None  # no value: Celery refuses it itself
    assert option_value(["-l", "DEBUG"], "-l", "--loglevel") == "DEBUG"
    assert option_value(["--loglevel=info"], "-l", "--loglevel") == "info"
