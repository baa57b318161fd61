"""Structured JSON logs, one line per event, with personal data masked as a last line of defence."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

_PHONE = re.compile(r"(?<![\w.])\+?(\d{2})\d{6,11}(\d{2})(?!\w)")
_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b")
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+", re.IGNORECASE)
_TOKEN_PARAM = re.compile(r"\b((?:access|input)_token=)[^&\s\"']+")  # Graph URLs (debug_token)
_STD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def scrub(text: str) -> str:
    text = _BEARER.sub(r"\1***", text)
    text = _TOKEN_PARAM.sub(r"\1***", text)
    text = _EMAIL.sub(r"\1***@\2", text)
    return _PHONE.sub(lambda m: f"+{m.group(1)}{'*' * (len(m.group(0).lstrip('+')) - 4)}{m.group(2)}", text)


def args_summary(args: Any) -> str:
    """What task events may show of a job-body argument: its kind, template and sender, and
    the masked recipient; never parameters, texts, emails or metadata."""
    parts = []
    for a in args if isinstance(args, (list, tuple)) else [args]:
        if isinstance(a, dict):
            shown = " ".join(f"{k}={str(a[k])[:64]}" for k in ("kind", "template", "sender") if k in a)
            to = scrub(str(a["to"])[:32]) if "to" in a else None
            parts.append(f"<job {shown}{' to=' + to if to else ''} ({len(a)} fields)>")
        else:
            parts.append(f"<{type(a).__name__}>")
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def scrub_value(value: Any) -> Any:
    """Scrub strings inside nested extras (Celery puts task args in a dict)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_value(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                if k == "data" and isinstance(v, dict) and record.name.startswith("celery"):
                    # Celery logs task arguments: a job body holds numbers, names and codes.
                    v = {dk: dv for dk, dv in v.items() if dk not in ("args", "kwargs", "return_value")}
                out[k] = scrub_value(v)
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def setup_logging(level: str = "INFO", json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
