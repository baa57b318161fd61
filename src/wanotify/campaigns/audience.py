"""Campaign audiences: CSV or JSON lines, streamed in, every row validated, duplicates
collapsed, opted-out numbers counted apart, rejects kept with their line numbers."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import text

from wanotify.campaigns.records import CampaignError, load_campaign
from wanotify.compliance.consent import opted_out
from wanotify.core.phones import normalize_e164
from wanotify.core.templates import MAX_PARAM_CHARS
from wanotify.core.zones import valid_zone
from wanotify.db import session_scope
from wanotify.templates.catalogue import get_catalogue

IMPORT_BATCH = 2000


@dataclass
class ImportReport:
    accepted: int = 0
    duplicates: int = 0
    opted_out: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "opted_out": self.opted_out,
                "rejected": self.rejected}


def _csv_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, str] | str]]:
    """(line, row) for each record; the header is line 1, a record starts where it starts."""
    reader = csv.reader(lines)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        yield 1, f"unreadable header: {exc}"
        return
    if "to" not in header:
        yield 1, "the header has no 'to' column"
        return
    last = reader.line_num
    while True:
        start = last + 1
        try:
            rec = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, f"unreadable CSV: {exc}"
            last = reader.line_num
            continue
        last = reader.line_num
        if not any(c.strip() for c in rec):
            continue  # blank line
        if len(rec) != len(header):
            yield start, f"{len(rec)} cells; the header has {len(header)}"
            continue
        yield start, dict(zip(header, rec, strict=True))


def _jsonl_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, str] | str]]:
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield n, f"malformed JSON: {exc}"
            continue
        if not isinstance(obj, dict):
            yield n, "each line must be a JSON object"
            continue
        flat: dict[str, str] = {}
        body = obj.get("params", obj.get("body"))
        if isinstance(body, list):
            for i, v in enumerate(body, start=1):
                flat[f"body_{i}"] = v if isinstance(v, str) else orjson.dumps(v).decode()
        for k, v in obj.items():
            if k not in ("params", "body"):
                flat[k.lower()] = v if isinstance(v, str) else ("" if v is None else str(v))
        yield n, flat


def _check_row(row: dict[str, str], n_params: int) -> tuple[dict[str, Any] | None, str | None]:
    try:
        phone = normalize_e164(row.get("to", "").strip())
    except ValueError as exc:
        return None, f"to: {exc}"
    params: list[str] = []
    for i in range(1, n_params + 1):
        v = row.get(f"body_{i}", "")
        if not v.strip():
            return None, f"body_{i}: missing parameter (the template takes {n_params})"
        if len(v) > MAX_PARAM_CHARS:
            return None, f"body_{i}: {len(v)} characters; the limit is {MAX_PARAM_CHARS}"
        params.append(v)
    extra = [k for k in row if k.startswith("body_") and k[5:].isdigit() and int(k[5:]) > n_params and row[k].strip()]
    if extra:
        return None, f"{extra[0]}: the template takes {n_params} parameter(s)"
    tz = (row.get("tz") or "").strip() or None
    if tz is not None and not valid_zone(tz):
        return None, f"tz: unknown time zone {tz!r}"
    email = (row.get("email") or "").strip() or None
    if email is not None and ("@" not in email or len(email) > 320):
        return None, "email: not an email address"
    locale = (row.get("locale") or "").strip() or None
    return {"phone": phone, "params": params, "tz": tz, "email": email, "locale": locale}, None


def import_audience(cid: uuid.UUID, lines: Iterable[str], fmt: str = "csv",
                    progress: Callable[[int], None] | None = None) -> ImportReport:
    """Stream an audience in (any number of calls before the campaign starts)."""
    with session_scope() as s:
        c = load_campaign(s, cid)
    if c.status not in ("draft", "scheduled"):
        raise CampaignError(409, "status", f"the campaign is {c.status}; audiences are imported before it starts")
    n_params = len(get_catalogue().get(c.template, c.language).body_params)
    rows = _jsonl_rows(lines) if fmt == "jsonl" else _csv_rows(lines)
    report = ImportReport()
    batch: list[dict[str, Any]] = []
    seen_lines = 0

    def flush() -> None:
        if not batch:
            return
        with session_scope() as s:
            out = opted_out(s, [r["phone"] for r in batch]) if c.kind == "marketing" else set()
            for r in batch:
                r["state"] = "opted_out" if r["phone"] in out else "pending"
            got = s.execute(text(
                "INSERT INTO campaign_recipients (campaign_id, phone, line, params, tz, email, locale, state)"
                " SELECT :cid, r.phone, r.line, r.params, r.tz, r.email, r.locale, r.state"
                " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(phone text, line int, params jsonb,"
                " tz text, email text, locale text, state text)"
                " ON CONFLICT (campaign_id, phone) DO NOTHING RETURNING state"),
                {"cid": cid, "rows": orjson.dumps(batch).decode()}).scalars().all()
        report.duplicates += len(batch) - len(got)
        report.opted_out += sum(1 for st in got if st == "opted_out")
        report.accepted += sum(1 for st in got if st == "pending")
        batch.clear()

    def reject(line: int, reason: str) -> None:
        report.rejected.append({"line": line, "reason": reason})

    for line, row in rows:
        seen_lines = line
        if isinstance(row, str):
            reject(line, row)
            continue
        ok, why = _check_row(row, n_params)
        if ok is None:
            reject(line, why or "invalid")
            continue
        ok["line"] = line
        batch.append(ok)
        if len(batch) >= IMPORT_BATCH:
            # One statement dedupes within the batch against earlier ones: keep the first.
            flush()
            if progress:
                progress(seen_lines)
    flush()
    if progress:
        progress(seen_lines)
    if report.rejected:
        with session_scope() as s:
            for k in range(0, len(report.rejected), 5000):
                s.execute(text(
                    "INSERT INTO campaign_rejects (campaign_id, line, reason)"
                    " SELECT :cid, r.line, r.reason FROM jsonb_to_recordset(CAST(:rows AS jsonb))"
                    " AS r(line int, reason text)"),
                    {"cid": cid, "rows": orjson.dumps(report.rejected[k:k + 5000]).decode()})
    return report


def import_file(cid: uuid.UUID, path: str, progress: Callable[[int], None] | None = None) -> ImportReport:
    fmt = "jsonl" if path.endswith((".jsonl", ".ndjson", ".json")) else "csv"
    with open(path, encoding="utf-8-sig", newline="") as f:
        return import_audience(cid, f, fmt, progress)


def import_bytes(cid: uuid.UUID, body: bytes, content_type: str) -> ImportReport:
    fmt = "jsonl" if "json" in content_type else "csv"
    try:
        stream = io.StringIO(body.decode("utf-8-sig"), newline="")
    except UnicodeDecodeError as exc:
        raise CampaignError(422, "body", f"not UTF-8: {exc}") from None
    return import_audience(cid, stream, fmt)
