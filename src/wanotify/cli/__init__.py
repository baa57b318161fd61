"""The ``wanotify`` command: the typer root and one module per sub-command group."""
