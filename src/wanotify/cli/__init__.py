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


def prepare_multiprocess_metrics(args: list[str]) -> None:
    """Under a process pool each child counts its own sends: share them through
    prometheus_client's multiprocess directory so the worker's metrics port shows them all.
    Must run before prometheus_client is imported."""
    pool = "threads"
    for i, a in enumerate(args):
        if a in ("-P", "--pool") and i + 1 < len(args):
            pool = args[i + 1]
        elif a.startswith("--pool="):
            pool = a.split("=", 1)[1]
        elif a.startswith("-P") and len(a) > 2:
            pool = a[2:]
    if pool in ("prefork", "processes") and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wanotify-metrics-")
