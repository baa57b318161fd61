"""What every campaign module shares: the error, loading a row, the daily budget, schedules."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

from wanotify.campaigns.cron import Schedule, parse
from wanotify.config import get_settings
from wanotify.pacing.lanes import Tier
from wanotify.redis import get_redis


class CampaignError(Exception):
    def __init__(self, status: int, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.status, self.field, self.reason = status, field, reason


def load_campaign(s: Any, cid: uuid.UUID, lock: bool = False) -> Any:
    row = s.execute(text("SELECT * FROM campaigns WHERE id = :id" + (" FOR UPDATE" if lock else "")),
                    {"id": cid}).one_or_none()
    if row is None:
        raise CampaignError(404, "id", "no such campaign")
    return row


def schedule_of(cron: str) -> Schedule:
    return parse(cron)


def check_budget(s: Any, c: Any, pending: int, whole_tier: bool = False) -> None:
    """Marketing beyond the portfolio's remaining daily unique-recipient budget is refused
    (``whole_tier``: beyond a whole day's budget, for a recurring campaign's audience)."""
    if c.kind != "marketing":
        return

    sender = get_settings().sender(c.sender)
    tier = Tier.for_sender(sender)
    if tier is None:
        return
    limit = int(tier.limit * tier.marketing_share)  # marketing's share of the tier
    if whole_tier:
        if pending > limit:
            raise CampaignError(
                409, "audience",
                f"{pending} recipients, but the portfolio's daily budget lets marketing reach {limit} unique"
                f" recipients a day ({tier.limit} in all): split the audience")
        return
    used = tier.used(get_redis())
    left = max(0, limit - used)
    if pending > left:
        raise CampaignError(
            409, "audience",
            f"{pending} recipients, but the portfolio's daily budget has {left} unique recipients left"
            f" (marketing may use {limit} of {tier.limit}; {used} used today): split the audience or"
            " start it tomorrow")
