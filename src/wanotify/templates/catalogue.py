"""The catalogue in force: ``WANOTIFY_TEMPLATES`` (or the shipped example), reloaded when
the file changes (looked at again at most once a second)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import yaml

from wanotify.config import get_settings
from wanotify.core.templates import Catalogue, parse_catalogue

_cache: dict[tuple[str, float], Catalogue] = {}
_lock = threading.Lock()


def load_catalogue(path: Path) -> Catalogue:
    """Load (and cache by path and mtime) a YAML/JSON catalogue file."""
    path = Path(path)
    key = (str(path.resolve()), path.stat().st_mtime)
    with _lock:
        cat = _cache.get(key)
        if cat is None:
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise ValueError(f"{path}: not valid YAML/JSON: {exc}") from None
            cat = parse_catalogue(data, str(path))
            _cache[key] = cat
        return cat


_current: tuple[float, str, Catalogue] | None = None


def get_catalogue() -> Catalogue:
    """The configured catalogue; its file is looked at again at most once a second."""
    global _current
    path = str(get_settings().templates_path)
    now = time.monotonic()
    cur = _current
    if cur is not None and cur[1] == path and now - cur[0] < 1.0:
        return cur[2]
    cat = load_catalogue(Path(path))
    _current = (now, path, cat)
    return cat
