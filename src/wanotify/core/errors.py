"""Exception hierarchy: failures are classified once, at the boundary where they happen."""

from __future__ import annotations


class WanotifyError(Exception):
    """Base class of every error wanotify raises on purpose."""


class InvalidJob(WanotifyError, ValueError):
    """A job body that can never be sent as given. ``errors`` lists (field, reason) pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{f}: {r}" for f, r in errors))

    def as_json(self) -> list[dict[str, str]]:
        return [{"field": f, "reason": r} for f, r in self.errors]


class IdempotencyConflict(WanotifyError):
    """The idempotency key was already used with a different body."""

    def __init__(self, key: str, existing_id: str):
        self.key = key
        self.existing_id = existing_id
        super().__init__(
            f"idempotency key {key!r} was already used with a different body (job {existing_id})"
        )


class DeliveryError(WanotifyError):
    """A provider call did not succeed; subclasses say what to do about it."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
        details: str | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.retry_after = retry_after
        self.details = details


class Retryable(DeliveryError):
    """Transient: the same request may succeed later."""


class Throttled(DeliveryError):
    """A rate limit (per number or per recipient pair): slow down, do not burn an attempt."""


class Undeliverable(DeliveryError):
    """This channel cannot reach the recipient: fall back to the next channel."""


class Permanent(DeliveryError):
    """The request itself is wrong (or the account is blocked): fail the job."""
