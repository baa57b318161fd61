"""The ``wanotify`` command: the typer root (``cli.main``) and one module per group of verbs."""

from __future__ import annotations

import os
import sys
import tempfile

from pydantic import ValidationError

from wanotify.config import describe_invalid, get_settings  # neither imports prometheus_client
from wanotify.worker.options import option_value


def main() -> None:
    """The console script. A prefork worker's metrics need prometheus_client's multiprocess
    directory set before prometheus_client is first imported, so that is decided here,
    from the raw arguments, before the verbs (and everything they import) are loaded."""
    argv = sys.argv[1:]
    if argv[:1] == ["worker"]:
        prepare_multiprocess_metrics(argv[1:])
    check_settings()
    from wanotify.cli.main import run  # noqa: PLC0415  (lazy: only after the metrics directory is decided)

    run()


def check_settings() -> None:
    """Bad ``WANOTIFY_*`` values: one message naming each variable and exit code 2, before
    the verbs are imported (the Celery app reads the settings as it is built)."""
    try:
        get_settings()
    except ValidationError as exc:
        sys.stderr.write(f"error: invalid configuration: {describe_invalid(exc)}\n")
        raise SystemExit(2) from None


def prepare_multiprocess_metrics(args: list[str]) -> None:
    """Under a process pool each child counts its own sends: share them through
    prometheus_client's multiprocess directory so the worker's metrics port shows them all.
    Must run before prometheus_client is imported."""
    pool = option_value(args, "-P", "--pool") or "threads"
    if pool in ("prefork", "processes") and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wanotify-metrics-")
