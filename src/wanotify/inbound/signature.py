"""Meta's ``X-Hub-Signature-256``: HMAC-SHA256 of the exact raw body, keyed with the app
secret, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

_SIG_PREFIX = "sha256="


def _key(app_secret: bytes | str) -> bytes:
    return app_secret.encode("utf-8") if isinstance(app_secret, str) else bytes(app_secret)


def sign(app_secret: bytes | str, body: bytes) -> str:
    """``X-Hub-Signature-256`` value for ``body``: ``"sha256=<lowercase hex>"``."""
    key = _key(app_secret)
    if not key:
        raise ValueError("app secret is empty")
    return _SIG_PREFIX + hmac.new(key, bytes(body), hashlib.sha256).hexdigest()


def verify_signature(app_secret: bytes | str, body: bytes, header: str | None) -> bool:
    """Check Meta's ``X-Hub-Signature-256`` header against the exact raw body.

    HMAC-SHA256 keyed with the app secret, compared in constant time with
    :func:`hmac.compare_digest`. Returns ``False`` (never raises) for a missing
    or malformed header, a wrong prefix, an empty secret or a non-bytes body.
    The comparison is exact: Meta sends ``sha256=`` and lowercase hex.
    """
    try:
        if type(header) is not str or not header.startswith(_SIG_PREFIX):
            return False
        if len(header) != len(_SIG_PREFIX) + 64:
            return False
        if not isinstance(body, bytes | bytearray | memoryview):
            return False
        if not isinstance(app_secret, bytes | bytearray | str):
            return False
        key = _key(app_secret)
        if not key:
            return False
        expected = sign(key, bytes(body)).encode("ascii")
        return hmac.compare_digest(expected, header.encode("utf-8", "replace"))
    except Exception:
        return False
