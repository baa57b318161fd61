"""The ``wanotify`` command: the typer root (``cli.main``) and one module per group of verbs."""

from __future__ import annotations

import os
import sys
import tempfile


def main() -> None:
    """The console script. A prefork worker's metrics need prometheus_client's multiprocess
    directory set before prometheus_client is first imported, so that is decided here,
    from the raw arguments, before the verbs (and everything they import) are loaded."""
    argv = sys.argv[1:]
    if argv[:1] == ["worker"]:
        prepare_multiprocess_metrics(argv[1:])
    from wanotify.cli.main import run  # noqa: PLC0415  (lazy: only after the metrics directory is decided)

    run()


def option_value(args: list[str], short: str, long: str) -> str | None:
    """The value a ``celery worker`` option is given (``-P x``, ``-Px``, ``--pool x``,
    ``--pool=x``; the last one wins, as in Celery), or None when it is not given."""
    value: str | None = None
    for i, a in enumerate(args):
        if a in (short, long) and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(long + "="):
            value = a.split("=", 1)[1]
        elif a.startswith(short) and len(a) > len(short) and not a.startswith("--"):
            value = a[len(short):]
    return value


def prepare_multiprocess_metrics(args: list[str]) -> None:
    """Under a process pool each child counts its own sends: share them through
    prometheus_client's multiprocess directory so the worker's metrics port shows them all.
    Must run before prometheus_client is imported."""
    pool = option_value(args, "-P", "--pool") or "threads"
    if pool in ("prefork", "processes") and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wanotify-metrics-")
