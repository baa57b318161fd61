"""Flower is behind basic authentication unless explicitly opened, and then only on loopback.

- ``WANOTIFY_FLOWER_BASIC_AUTH=user:password[,user2:password2]`` set: those credentials.
- Not set: a generated password for user ``ops``, kept in ``<state dir>/flower-auth``
  (mode 0600, in a 0700 directory; the state dir is ``WANOTIFY_STATE_DIR``, else
  ``$XDG_STATE_HOME/wanotify``, else ``~/.local/state/wanotify``) and reused on the next start. Only the file's path is
  printed, never the password, and nothing of it reaches the JSON logs.
- ``--no-auth``: Flower without authentication, refused unless the address is loopback.

The credentials reach Flower through its ``FLOWER_BASIC_AUTH`` environment variable, so
they do not show in the process list as a ``--basic-auth=`` argument would.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from wanotify.config import get_settings

USER = "ops"
FILE_NAME = "flower-auth"


class FlowerAuthError(Exception):
    """The configuration would expose Flower, or the credentials are unusable."""


@dataclass(frozen=True)
class FlowerAuth:
    basic_auth: str | None  # Flower's "user:password[,...]"; None: no authentication
    notice: str  # what to tell the operator (never the password)


def state_dir() -> Path:
    return get_settings().state_path


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _validate(value: str, where: str) -> str:
    pairs = [p.strip() for p in value.split(",") if p.strip()]
    if not pairs:
        raise FlowerAuthError(f"{where} is empty")
    for pair in pairs:
        user, sep, password = pair.partition(":")
        if not sep or not user or not password:
            raise FlowerAuthError(f"{where} must be user:password[,user2:password2]")
    return ",".join(pairs)


def _generated(directory: Path) -> tuple[str, Path, bool]:
    """The stored credentials, made on first use; (value, file, created)."""
    path = directory / FILE_NAME
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise FlowerAuthError(f"{path} is readable by others (mode {mode:o}): chmod 600 it or delete it")
        return _validate(path.read_text(encoding="utf-8"), str(path)), path, False
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = f"{USER}:{secrets.token_urlsafe(24)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value + "\n")
    return value, path, True


def resolve(configured: str | None, address: str, no_auth: bool = False,
            directory: Path | None = None) -> FlowerAuth:
    """How Flower authenticates for this start (see the module docstring)."""
    if no_auth:
        if configured and configured.strip():
            raise FlowerAuthError("--no-auth contradicts WANOTIFY_FLOWER_BASIC_AUTH: unset one of them")
        if not is_loopback(address):
            raise FlowerAuthError(f"refusing to serve Flower on {address} without authentication: "
                                  "--no-auth is only allowed on a loopback address")
        return FlowerAuth(None, f"Flower runs WITHOUT authentication on {address} (--no-auth)")
    if configured and configured.strip():
        return FlowerAuth(_validate(configured, "WANOTIFY_FLOWER_BASIC_AUTH"),
                          "Flower login: the credentials in WANOTIFY_FLOWER_BASIC_AUTH")
    value, path, created = _generated(directory or state_dir())
    made = "generated a password" if created else "password"
    return FlowerAuth(value, f"Flower login: user '{USER}', {made} in {path} (mode 600); "
                             "set WANOTIFY_FLOWER_BASIC_AUTH=user:password to choose your own")
