"""Notification statuses and the one rule for moving between them."""

from __future__ import annotations

# DESIGN.md: queued < sending < accepted < sent < delivered < read; only forward.
RANK: dict[str, int] = {"queued": 0, "sending": 1, "accepted": 2, "sent": 3, "delivered": 4, "read": 5}
TERMINAL = frozenset({"failed", "expired", "fallback_sms", "fallback_email", "cancelled", "opted_out"})
# What the demo and users count as "has an outcome".
OUTCOMES = frozenset({"delivered", "read", *TERMINAL})
ALL = (*RANK, *sorted(TERMINAL))

# SQL fragment: the rank of notifications.status (terminal states rank above everything).
SQL_RANK = (
    "CASE {col} WHEN 'queued' THEN 0 WHEN 'sending' THEN 1 WHEN 'accepted' THEN 2 "
    "WHEN 'sent' THEN 3 WHEN 'delivered' THEN 4 WHEN 'read' THEN 5 ELSE 100 END"
)


def advances(current: str, new: str) -> bool:
    """Whether a status report ``new`` moves a job that is ``current``.

    Forward moves only; ``failed`` applies while the job is before ``delivered``; nothing
    moves a job out of a terminal state.
    """
    if current in TERMINAL:
        return False
    if new == "failed":
        return RANK.get(current, 100) < RANK["delivered"]
    if new not in RANK:
        return False
    return RANK[new] > RANK.get(current, 100)
