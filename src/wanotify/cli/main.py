"""The typer root of ``wanotify``: every verb and group, registered in one place.

Every verb reads the same ``WANOTIFY_*`` settings (``cli.common.settings``); bad input is a
message naming the option and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from wanotify.cli import bench, campaign, dlq, jobs, keys, privacy, processes, senders
from wanotify.cli.common import PASSTHROUGH

app = typer.Typer(
    name="wanotify",
    help="Outbound WhatsApp Business notifications: paced, retried, with fallback and exact statuses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(processes.migrate)
app.command()(processes.web)
app.command(context_settings=PASSTHROUGH)(processes.worker)
app.command(context_settings=PASSTHROUGH)(processes.beat)
app.command(context_settings=PASSTHROUGH)(processes.flower)
app.command()(processes.sandbox)
app.command()(processes.demo)
app.command()(jobs.send)
app.command()(jobs.status)
app.command("purge")(privacy.purge)
app.command("erase")(privacy.erase)
app.add_typer(dlq.dlq_app, name="dlq")
app.add_typer(senders.senders_app, name="senders")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(campaign.campaign_app, name="campaign")
app.add_typer(bench.bench_app, name="bench")


def run() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
