"""The errors wanotify raises on purpose at its boundaries (a job refused, a key reused).

Provider failures are not exceptions: each call returns a result, and what its error code
means is decided in one table (``providers.policy``).
"""

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
