"""``wanotify bench throughput``: wanotify's own overhead against the textbook baseline.

Everything runs on this machine against the sandbox (Meta's limits raised so pacing does
not cap the figures): the baselines (a Celery no-op drain, the naive and the pooled
one-task-per-message send) and wanotify's send path at 0 ms and 50 ms of API latency,
enqueue over HTTP and in bulk, and webhook ingest against an ORM-one-row-per-commit
baseline. Each figure is the median of several runs; ratios are taken within this run.
"""

from __future__ import annotations

from wanotify.devtools.bench.throughput.runner import run

# The modules: figures (what is measured, and the sizes), send (the send path and the
# textbook Celery baselines), enqueue (HTTP, batch and bulk), ingest (webhooks),
# memory (RSS over a long drain), load (the open-loop client), report (medians, the table)
# and runner (one run of every phase, and the command).

__all__ = ["run"]
