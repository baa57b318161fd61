"""API-key authentication as a FastAPI dependency, and the scope rules of a key."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from wanotify.accounts.api_keys import (
    Authenticator,
    KeyRecord,
    KeyRejected,
    campaign_sender,
    scope_job,
)
from wanotify.web.errors import ApiError, field_error
from wanotify.web.state import get_state


def rejected(exc: KeyRejected) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message, exc.fields, exc.headers)


async def authorize(keys: Authenticator, headers: Mapping[str, str]) -> KeyRecord:
    """The caller's key record (``Authorization: Bearer``), or an ApiError (401/429)."""
    try:
        return await keys.authenticate(headers)
    except KeyRejected as exc:
        raise rejected(exc) from None


async def api_key(request: Request) -> KeyRecord:
    """The dependency every ``/v1`` route takes."""
    return await authorize(get_state(request).keys, request.headers)


def unscoped(what: str) -> Callable[[Request], Awaitable[KeyRecord]]:
    """A dependency for what spans senders (dead letters, erasure): only a key not scoped to
    senders may; ``what`` says so in the 403 ("dead letters need", "erasure needs")."""

    async def dependency(request: Request) -> KeyRecord:
        record = await api_key(request)
        if record.scoped:
            raise field_error(403, "forbidden", f"{what} an API key not scoped to senders",
                              "Authorization", "API key scoped to senders")
        return record

    return dependency


ApiKey = Annotated[KeyRecord, Depends(api_key)]


def scoped(record: KeyRecord, data: Any) -> Any:
    """A job or campaign body within the key's senders (its first sender by default)."""
    try:
        return scope_job(record, data)
    except KeyRejected as exc:
        raise rejected(exc) from None


async def campaign_in_scope(record: KeyRecord, cid: uuid.UUID) -> None:
    """Another sender's campaign is, for a scoped key, a campaign that does not exist."""
    if record.scoped:
        sender = await run_in_threadpool(campaign_sender, cid)
        if sender is None or not record.allows(sender):
            raise field_error(404, "not_found", "no such campaign", "id", "no such campaign")
