"""Keyed hashes of personal data: HMAC-SHA256 with ``WANOTIFY_PII_HASH_KEY``.

A plain SHA-256 of a phone number is reversed by trying every number, so every hash of
personal data is keyed. Unset, a random key generated in the database by migration 0007 is
used (and a warning logged): it is stable, but lives beside the data it protects. Never
change the key once opt-outs were erased: their hashes would no longer match. The same HMAC
is available to SQL (:func:`sql_hmac`), so set-based statements hash without a round trip.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from functools import lru_cache

from sqlalchemy import text

from wanotify.config import get_settings
from wanotify.db import session_scope

log = logging.getLogger("wanotify.compliance.hashing")


@lru_cache(maxsize=4)
def _db_key(database_url: str) -> bytes:
    with session_scope() as s:
        key = s.execute(text("SELECT key FROM privacy_key WHERE id = 1")).scalar_one_or_none()
    if key is None:
        raise RuntimeError("no privacy key: run `wanotify migrate`, or set WANOTIFY_PII_HASH_KEY")
    log.warning("WANOTIFY_PII_HASH_KEY is not set: personal-data hashes use the key generated in the"
                " database, which lives beside the data it protects; set it in production")
    return bytes(key)


def hash_key() -> bytes:
    s = get_settings()
    if s.pii_hash_key is not None and s.pii_hash_key.get_secret_value():
        return s.pii_hash_key.get_secret_value().encode()
    return _db_key(s.database_url)


def keyed(domain: str, value: str) -> str:
    return hmac.new(hash_key(), f"{domain}:{value}".encode(), hashlib.sha256).hexdigest()


def phone_hash(e164: str) -> str:
    """The opt-out key: HMAC-SHA256 of the E.164 number (hex)."""
    return keyed("phone", e164)


def pseudonym(e164: str) -> str:
    """What a number becomes past its retention (fits the 20-character columns)."""
    return "h:" + phone_hash(e164)[:18]


def keyed_fingerprint(fingerprint: str) -> str:
    """A request fingerprint once its job's content is wiped (idempotency still answers)."""
    return "k:" + keyed("fp", fingerprint)[:62]


def hmac_pads() -> dict[str, bytes]:
    """HMAC's inner and outer keys, so that SQL computes the same HMAC with sha256()."""
    key = hash_key()
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return {"ki": bytes(b ^ 0x36 for b in key), "ko": bytes(b ^ 0x5C for b in key)}


def sql_hmac(expr: str, domain: str) -> str:
    """SQL for the hex HMAC of ``domain:expr`` (the same as ``keyed``), no extension needed."""
    return (f"encode(sha256(CAST(:ko AS bytea) || sha256(CAST(:ki AS bytea) || "
            f"convert_to('{domain}:' || COALESCE({expr}, ''), 'UTF8'))), 'hex')")


def pseudo_sql(expr: str) -> str:
    return f"'h:' || left({sql_hmac(expr, 'phone')}, 18)"
