"""What the web app's handlers share, built once per app: settings, the API-key
authenticator, the group-commit writers. Routes reach it through :func:`get_state`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from wanotify.accounts.api_keys import Authenticator
from wanotify.config import Settings
from wanotify.inbound.ingest import store_webhooks_and_kick
from wanotify.intake.service import Prepared, store
from wanotify.web.group_commit import GroupCommit


@dataclass
class WebState:
    settings: Settings
    keys: Authenticator
    # Concurrent requests share transactions (see group_commit): each answer still waits
    # for its own commit.
    enqueue_writes: GroupCommit[Prepared, Any]
    webhook_writes: GroupCommit[bytes, int]

    @classmethod
    def build(cls, settings: Settings) -> WebState:
        # API keys: WANOTIFY_API_KEYS (unscoped, unlimited) and those made by `wanotify keys`
        # (cached in this process; see accounts.api_keys for the revocation bound).
        return cls(
            settings=settings,
            keys=Authenticator(settings.api_key_set, settings.redis_url),
            enqueue_writes=GroupCommit(store),
            webhook_writes=GroupCommit(store_webhooks_and_kick, max_batch=100),
        )


def get_state(request: Request) -> WebState:
    state: WebState = request.app.state.wanotify
    return state
