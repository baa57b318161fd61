"""What every ``wanotify`` verb shares: the consoles, the settings (validated, with a clear
message), the error printer (exit code 2 for bad input), id parsing."""

from __future__ import annotations

import uuid
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from wanotify.config import Settings, describe_invalid, get_settings
from wanotify.logs import setup_logging as _setup_logging

console = Console()
err_console = Console(stderr=True)

# Verbs that hand their further options to Celery (worker, beat, flower).
PASSTHROUGH: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True}


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def settings() -> Settings:
    try:
        s = get_settings()
        s.sender_list  # noqa: B018  (validate senders now, with a clear message)
    except ValidationError as exc:
        fail(f"invalid configuration: {describe_invalid(exc)}")
    except ValueError as exc:
        fail(f"invalid configuration: {exc}")
    return s


def setup_logging() -> None:
    s = settings()
    _setup_logging(s.log_level, s.log_json)


def parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{value!r} is not a {what} id")
