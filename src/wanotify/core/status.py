"""Notification statuses: the one order, the one rule for moving between them, and the SQL
built from them (so that no statement hard-codes a rank).

The order is ``queued < sending < accepted < sent < delivered < read``; a job moves
forward only. ``failed`` applies while the job is before ``delivered``; a terminal state
(failed, expired, a fallback's outcome, cancelled, opted out) never moves again.
"""

from __future__ import annotations

ORDER: tuple[str, ...] = ("queued", "sending", "accepted", "sent", "delivered", "read")
RANK: dict[str, int] = {status: rank for rank, status in enumerate(ORDER)}
TERMINAL = frozenset({"failed", "expired", "fallback_sms", "fallback_email", "cancelled", "opted_out"})
# The rank SQL gives terminal (and unknown) states: above every rung of the order.
TERMINAL_RANK = 100
# What the demo and users count as "has an outcome".
OUTCOMES = frozenset({"delivered", "read", *TERMINAL})
ALL = (*ORDER, *sorted(TERMINAL))


def advances(current: str, new: str) -> bool:
    """Whether a status report ``new`` moves a job that is ``current``.

    Forward moves only; ``failed`` applies while the job is before ``delivered``; nothing
    moves a job out of a terminal state.
    """
    if current in TERMINAL:
        return False
    if new == "failed":
        return RANK.get(current, TERMINAL_RANK) < RANK["delivered"]
    if new not in RANK:
        return False
    return RANK[new] > RANK.get(current, TERMINAL_RANK)


def sql_rank(col: str) -> str:
    """SQL for the rank of the status in column ``col`` (terminal states: TERMINAL_RANK)."""
    whens = " ".join(f"WHEN '{status}' THEN {rank}" for status, rank in RANK.items())
    return f"CASE {col} {whens} ELSE {TERMINAL_RANK} END"


def sql_before(col: str, status: str) -> str:
    """SQL: the status in ``col`` is on the ladder and before ``status``."""
    return f"{sql_rank(col)} < {RANK[status]}"


def sql_terminal(col: str) -> str:
    """SQL: the status in ``col`` is terminal (or unknown): nothing moves it."""
    return f"{sql_rank(col)} >= {TERMINAL_RANK}"


def sql_forward(current: str, new: str) -> str:
    """SQL: the ladder status in ``new`` moves a job whose status is in ``current``."""
    return f"{sql_rank(new)} < {TERMINAL_RANK} AND {sql_rank(new)} > {sql_rank(current)}"
