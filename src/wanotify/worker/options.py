"""Reading ``celery worker`` options from an argument list, as Celery would (one parser for
every option wanotify looks at before handing the list to Celery: the pool, the queues,
the node name, the log level)."""

from __future__ import annotations

from collections.abc import Sequence


def option_value(args: Sequence[str], short: str, long: str) -> str | None:
    """The value given to an option (``-P x``, ``-Px``, ``--pool x``, ``--pool=x``; the last
    one wins, as in Celery), or None when it is not given."""
    value: str | None = None
    items = list(args)
    for i, a in enumerate(items):
        if a in (short, long) and i + 1 < len(items):
            value = items[i + 1]
        elif a.startswith(long + "="):
            value = a.split("=", 1)[1]
        elif short and a.startswith(short) and len(a) > len(short) and not a.startswith("--"):
            value = a[len(short):]
    return value


def queues_of(args: Sequence[str]) -> list[str] | None:
    """The queues the options name (``-Q a,b``, ``-Qa,b``, ``--queues a,b``, ``--queues=a,b``),
    or None when they name none."""
    value = option_value(args, "-Q", "--queues")
    return None if value is None else [q.strip() for q in value.split(",") if q.strip()]
