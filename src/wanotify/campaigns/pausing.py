"""Campaign-level effects of bad news from Meta: pause the campaigns it concerns.

A template Meta paused, disabled, rejected or rated RED (template webhooks, ``inbound``),
or a number Meta reported for spam or policy (``providers.policy.pause_campaigns``, acted
on by the dispatcher): the active campaigns using it are paused, with the reason, and an
operator resumes them.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import text

from wanotify.db import session_scope

log = logging.getLogger("wanotify.campaigns")


def auto_pause(reason: str, *, template: tuple[str, str | None] | None = None,
               sender: str | None = None) -> list[str]:
    """Pause the active campaigns using a template Meta paused or rated RED, or sending from
    a number Meta reported for spam or policy; an operator resumes them."""
    if template is None and sender is None:
        return []
    where: list[str] = []
    params: dict[str, Any] = {"why": reason}
    if template is not None:
        where.append("template = :t AND (CAST(:l AS text) IS NULL OR language = :l)")
        params.update({"t": template[0], "l": template[1]})
    if sender is not None:
        where.append("sender = :s")
        params["s"] = sender
    with session_scope() as s:
        ids = s.execute(text(
            "UPDATE campaigns SET status = 'paused', status_reason = :why, updated_at = now()"
            f" WHERE status IN ('scheduled', 'running') AND ({' OR '.join(where)}) RETURNING id"),
            params).scalars().all()
    if ids:
        log.error(
            "campaigns paused: %s", reason, extra={"campaigns": [str(i) for i in ids], "alert": True})
    return [str(i) for i in ids]
