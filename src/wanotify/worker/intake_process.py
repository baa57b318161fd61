"""The intake of a worker that consumes every queue, in a process of its own beside it
(``WANOTIFY_INTAKE_PROCESS=true``; off by default).

Validating and storing a producer's burst of ``wanotify.notify`` tasks costs ~0.6–0.9 ms of
a worker's CPU per job. In the process that also paces the sends, it takes the GIL and the
cores the send loops need at their slots, and the gate refuses what it reaches too late. In
a child process of its own, at a lower priority (``INTAKE_NICE``, its bulk batches lower
still: ``INTAKE_BULK_NICE``), the burst is stored from the CPU the send loops leave. Measured
with ``wanotify bench pacing --intake burst --compare-intake-process`` (docs/benchmarks.md,
2026-12-07), in each of four batches of alternated runs the worst-served number kept
0.6–2.9 points more of its limit with the child, and OTPs published to the same queue reached Meta 95–170 ms
later at p99 (they are received and stored at the lower priority too). Since the queue is
taken a hundred messages per round trip (``queues.puller``), inline intake costs the send
loops less and the child no longer gains them anything measurable (same bench, 2026-12-07,
later batches). Hence off by default; at most for hosts whose OTPs come through the HTTP API
(stored by the web app) while marketing bursts arrive on the queue.

:class:`IntakeProcess` starts that child (``wanotify worker --queues notify …``), restarts
it when it dies (with a growing pause), and stops it with the worker: it receives SIGTERM
when the worker starts its shutdown (``worker_shutting_down``), and from the kernel when the
worker's process dies without one (``PR_SET_PDEATHSIG``: a SIGKILLed worker leaves no
orphan holding the queue).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence

from wanotify.worker.options import option_value

log = logging.getLogger("wanotify.worker.intake")

# How much lower an intake-only worker runs (nice), and its bulk thread on top of that (its
# OTP thread and the consumer receiving the messages stay at INTAKE_NICE, so an OTP is
# received and stored sooner than a burst's batch). Measured as above: +10 for the whole
# process gave the same utilisation, and OTPs stored later
# (enqueue → stored p99 316 against 191 ms, medians of 5 alternated runs).
INTAKE_NICE = 5
INTAKE_BULK_NICE = 5
# The child's Celery worker: its task pool only runs what is not a notify message (none in
# normal operation); the batches are stored by the intake consumer's own threads.
INTAKE_CONCURRENCY = 2
RESTART_PAUSE_S = (1.0, 30.0)  # first and longest pause before a dead child is started again
STOP_WAIT_S = 30.0  # a warm shutdown: the batch in hand is stored and acknowledged

_PR_SET_PDEATHSIG = 1


# Found once, here: a preexec_fn runs between fork and exec, where nothing may spawn a
# process or take a lock (ctypes.util.find_library runs ldconfig).
_LIBC = (ctypes.util.find_library("c") or "libc.so.6") if sys.platform.startswith("linux") else None


def die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """In a child before exec (``preexec_fn``): SIGTERM when the thread that started it is
    gone, even by SIGKILL (Linux; elsewhere a no-op)."""
    if _LIBC is not None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(_LIBC, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def child_node_name(parent_args: Sequence[str]) -> str:
    """The child's Celery node name: ``intake-<the worker's name>`` (``-n w1@%h`` →
    ``intake-w1@%h``; no ``-n``: ``intake-celery@%h``), so both are told apart in Flower."""
    name = option_value(parent_args, "-n", "--hostname") or "celery@%h"
    return f"intake-{name}" if "@" in name else f"intake-celery@{name}"


def child_metrics(environ: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """The child's environment for its metrics, and the directory this worker must add to
    its own endpoint (None: this worker is a process pool's parent and already sums that
    directory). The child serves no port of its own: its counters (jobs accepted and
    refused from the notify queue) appear on the worker's (``WANOTIFY_WORKER_METRICS_PORT``)."""
    shared = environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = shared or tempfile.mkdtemp(prefix="wanotify-intake-metrics-")
    return {"PROMETHEUS_MULTIPROC_DIR": path, "WANOTIFY_WORKER_METRICS_PORT": "0"}, None if shared else path


def child_command(parent_args: Sequence[str], queue: str) -> list[str]:
    """``wanotify worker`` for the intake queue alone, with the worker's log level."""
    cmd = [sys.executable, "-m", "wanotify", "worker", "--queues", queue,
           "--concurrency", str(INTAKE_CONCURRENCY), "-n", child_node_name(parent_args)]
    level = option_value(parent_args, "-l", "--loglevel")
    if level is not None:
        cmd += ["--loglevel", level]
    if any(a in ("-E", "--task-events") for a in parent_args):
        cmd.append("--task-events")
    return cmd


class IntakeProcess:
    """Keeps one intake child running while the worker runs."""

    def __init__(self, command: Sequence[str], restart_pause_s: tuple[float, float] = RESTART_PAUSE_S,
                 env: Mapping[str, str] | None = None):
        self.command = list(command)
        self.env = {**os.environ, **(env or {})}
        self.pause = restart_pause_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="wanotify-intake-process", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            self.proc = subprocess.Popen(self.command, preexec_fn=die_with_parent, env=self.env)
            self.starts += 1
            log.info("intake process started (pid %d, start %d)", self.proc.pid, self.starts)
            return self.proc

    def _supervise(self) -> None:
        """Started here, not by the caller's thread: the child's death signal follows the
        thread that forked it, and this one lives until the worker's process ends."""
        pause = self.pause[0]
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                proc = self._spawn()
            except OSError as exc:  # could not even start (fork refused, interpreter gone)
                log.error("intake process could not start (%s); trying again in %.0fs", exc, pause)
                code: int | str = "no start"
            else:
                if proc is None:
                    return
                code = proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 60:
                pause = self.pause[0]  # it had been running: a fresh failure
            log.error("intake process exited with %s; starting it again in %.0fs", code, pause)
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, self.pause[1])

    def terminate(self) -> subprocess.Popen[bytes] | None:
        """SIGTERM (Celery's warm shutdown) without waiting; it is not started again."""
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc

    def stop(self, wait_s: float = STOP_WAIT_S) -> int | None:
        """SIGTERM, then SIGKILL after ``wait_s``. The exit code (None: it never started)."""
        proc = self.terminate()
        if proc is None:
            return None
        try:
            return proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            log.warning("intake process did not stop within %.0fs; killing it", wait_s)
            proc.kill()
            return proc.wait()
