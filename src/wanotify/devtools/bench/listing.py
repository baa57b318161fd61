"""``wanotify bench listing``: ``GET /v1/notifications`` on a table of millions of jobs.

A private database is filled with ``--rows`` jobs spread over 30 days, shaped like a busy
deployment (90% marketing, 8% transactional, 2% OTP; a main, a backup and a rarely used
sender; mostly delivered or read, 3% failed, 0.2% still queued; 2 million recipients; one
job in ten with an idempotency key), then analysed. The web app serves it under uvicorn and
each query shape is asked ``--repeat`` times over HTTP: the first page, pages deep into the
cursor chain, every filter alone, a sparse combination, a scoped key. Printed per shape: the
page's p50 / p99 milliseconds and the plan Postgres chose (which index).

The baselines, in the same run: each shape's query again, in-process, inside a transaction
that has dropped the listing's own indexes (migration 0011) and is rolled back, so the
figures say what those indexes buy; and what they cost: the intake (``notify_many`` of
20,000 jobs) into the same table with and without them, alternated, and how long each takes
to build on it (what the migration costs there).
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

from wanotify.accounts.api_keys import create_key
from wanotify.devtools.bench.common import BenchEnv, bench_env, percentile
from wanotify.devtools.bench.throughput.enqueue import run_bulk_enqueue
from wanotify.devtools.procs import free_port, wait_http
from wanotify.ops.listing import ListFilter, list_sql

console = Console(width=140)

SENDERS = [
    {"name": "main", "phone_number_id": "106540352242922", "waba_id": "102290129340398", "mps": 80,
     "access_token": "bench-token"},
    {"name": "backup", "phone_number_id": "106540352242923", "waba_id": "102290129340398", "mps": 80,
     "access_token": "bench-token"},
    {"name": "rare", "phone_number_id": "106540352242924", "waba_id": "102290129340398", "mps": 80,
     "access_token": "bench-token"},
]
LISTING_INDEX_COLUMNS = {"ix_notifications_list_to": ("to_number", "id"),
                         "ix_notifications_list_sender": ("sender", "id"),
                         "ix_notifications_list_kind": ("kind", "id")}
LISTING_INDEXES = tuple(LISTING_INDEX_COLUMNS)
DAYS = 30
CHUNK = 500_000

# One statement per chunk: ids are UUIDv7 of each row's created_at (time-ordered, as the app
# makes them), the rest drawn from the row number so a run is the same every time.
FILL_SQL = """
INSERT INTO notifications (id, idempotency_key, kind, channel, status, sender, to_number, template,
                           language, category, payload, attempt_count, created_at, updated_at,
                           accepted_at, delivered_at, read_at, finished_at, error_code, wamid)
SELECT (lpad(to_hex(ms), 12, '0') || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
       CASE WHEN i %% 10 = 3 THEN 'bench-key-' || i END,
       kind, 'whatsapp', status, sender,
       '+9198' || lpad(((i * 7919) %% 2000000)::text, 8, '0'),
       CASE kind WHEN 'otp' THEN 'otp_code' WHEN 'marketing' THEN 'seasonal_sale' ELSE 'order_update' END,
       'en', CASE kind WHEN 'otp' THEN 'authentication' WHEN 'marketing' THEN 'marketing' ELSE 'utility' END,
       '{}'::jsonb, 1, at, at,
       CASE WHEN status NOT IN ('queued', 'expired') THEN at + interval '1 second' END,
       CASE WHEN status IN ('delivered', 'read') THEN at + interval '3 seconds' END,
       CASE WHEN status = 'read' THEN at + interval '1 minute' END,
       CASE WHEN status IN ('delivered', 'read', 'failed', 'expired') THEN at + interval '3 seconds' END,
       CASE WHEN status = 'failed' THEN 131026 END,
       CASE WHEN status NOT IN ('queued', 'expired') THEN 'wamid.bench' || i END
FROM (
  SELECT i, md5(i::text) AS h,
         %(t0)s::timestamptz + (i * %(step)s) * interval '1 millisecond' AS at,
         (extract(epoch FROM %(t0)s::timestamptz) * 1000)::bigint + (i * %(step)s)::bigint AS ms,
         CASE WHEN i %% 50 = 0 THEN 'otp' WHEN i %% 50 < 5 THEN 'transactional' ELSE 'marketing' END AS kind,
         CASE WHEN i %% 100 = 7 THEN 'rare' WHEN i %% 3 = 1 THEN 'backup' ELSE 'main' END AS sender,
         CASE WHEN i %% 1000 < 2 THEN 'queued' WHEN i %% 100 < 3 THEN 'failed' WHEN i %% 1000 < 35 THEN 'expired'
              WHEN i %% 100 < 40 THEN 'delivered' WHEN i %% 100 < 45 THEN 'sent' ELSE 'read' END AS status
  FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
) g
"""


@dataclass
class Shape:
    name: str
    query: str  # the HTTP query string
    filt: ListFilter  # the same, for the in-process baseline
    scoped: bool = False
    http_ms: list[float] = field(default_factory=list)
    base_ms: list[float] = field(default_factory=list)
    rows: int = 0
    plan: str = ""
    base_plan: str = ""


def fill(db_url: str, rows: int) -> float:
    """Insert ``rows`` jobs; returns rows per second."""
    t0 = datetime.now(UTC) - timedelta(days=DAYS)
    step = DAYS * 86_400_000 / rows  # milliseconds between two jobs
    started = time.perf_counter()
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        done = 0
        with console.status(f"filling {rows:,} jobs") as st:
            while done < rows:
                hi = min(rows, done + CHUNK)
                conn.execute(FILL_SQL, {"t0": t0, "step": step, "lo": done, "hi": hi - 1})
                done = hi
                st.update(f"filling: {done:,} of {rows:,} jobs")
        rate = rows / (time.perf_counter() - started)
        with console.status("VACUUM ANALYZE notifications"):
            conn.execute("VACUUM ANALYZE notifications")
    return rate


def rebuild(db_url: str) -> dict[str, float]:
    """Each listing index dropped and built again, timed: what migration 0011 costs on a
    table of this size (writes wait while an index is built)."""
    out: dict[str, float] = {}
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        for name, cols in LISTING_INDEX_COLUMNS.items():
            conn.execute(f"DROP INDEX IF EXISTS {name}")
            t = time.perf_counter()
            with console.status(f"building {name}"):
                conn.execute(f"CREATE INDEX {name} ON notifications ({', '.join(cols)})")
            out[name] = time.perf_counter() - t
    return out


def intake_cost(db_url: str, pairs: int = 3, n: int = 20_000) -> tuple[list[float], list[float]]:
    """``notify_many`` of ``n`` jobs into this table with the listing's indexes and without
    them (dropped, then built again), alternated: (jobs/s with, jobs/s without)."""
    conn = psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    have = True
    rates: dict[bool, list[float]] = {True: [], False: []}
    offset = 50_000_000
    try:
        for p in range(pairs):
            for arm in ((True, False) if p % 2 == 0 else (False, True)):
                if arm != have:
                    with console.status("dropping the listing's indexes" if have else "building them again"):
                        for name, cols in LISTING_INDEX_COLUMNS.items():
                            conn.execute(f"DROP INDEX {name}" if have
                                         else f"CREATE INDEX {name} ON notifications ({', '.join(cols)})")
                    have = arm
                with console.status(f"intake of {n:,} jobs {'with' if arm else 'without'} the listing's indexes"):
                    rates[arm].append(run_bulk_enqueue(SENDERS, n, offset=offset))
                offset += n
        if not have:
            for name, cols in LISTING_INDEX_COLUMNS.items():
                conn.execute(f"CREATE INDEX {name} ON notifications ({', '.join(cols)})")
    finally:
        conn.close()
    return rates[True], rates[False]


def shapes(now: datetime) -> list[Shape]:
    ten_days = now - timedelta(days=10)
    hour = (ten_days, ten_days + timedelta(hours=1))
    q = quote
    return [
        Shape("first page (100)", "", ListFilter()),
        Shape("sender=rare (1%)", "sender=rare", ListFilter(senders=("rare",))),
        Shape("kind=otp (2%)", "kind=otp", ListFilter(kinds=("otp",))),
        Shape("status=failed (3%)", "status=failed", ListFilter(statuses=("failed",))),
        Shape("status=queued (0.2%)", "status=queued", ListFilter(statuses=("queued",))),
        Shape("to=<one recipient> (~5 jobs)", f"to={q('+919800007919')}", ListFilter(to="+919800007919")),
        Shape("idempotency_key", "idempotency_key=bench-key-4000003",
              ListFilter(idempotency_key="bench-key-4000003")),
        Shape("one hour, 10 days back", f"created_after={q(hour[0].isoformat())}&created_before={q(hour[1].isoformat())}",
              ListFilter(created_after=hour[0], created_before=hour[1])),
        Shape("rare + otp + failed (sparse)", "sender=rare&kind=otp&status=failed",
              ListFilter(senders=("rare",), kinds=("otp",), statuses=("failed",))),
        Shape("scoped key (rare only)", "", ListFilter(), scoped=True),
    ]


def _explain(conn: psycopg.Connection[Any], f: ListFilter, allowed: tuple[str, ...] | None) -> str:
    sql, args = list_sql(f, allowed)
    plan = conn.execute("EXPLAIN (FORMAT JSON) " + sql, args).fetchone()
    nodes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Index Name" in node:
            short = node["Index Name"].replace("ix_notifications_", "").replace("_notifications", "")
            nodes.append(f"{node['Node Type'].replace(' Scan', '')} {short}")
        elif node["Node Type"] in ("Seq Scan", "Sort", "Bitmap Heap Scan"):
            nodes.append(node["Node Type"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0][0]["Plan"] if plan else {"Node Type": "?"})
    return ", ".join(dict.fromkeys(nodes)) or "?"


def _baseline(db_url: str, todo: list[Shape], repeat: int) -> None:
    """Each shape's query in-process, with the listing's indexes dropped (rolled back)."""
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for name in LISTING_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
        for s in todo:
            allowed = ("rare",) if s.scoped else None
            sql, args = list_sql(s.filt, allowed)
            s.base_plan = _explain(conn, s.filt, allowed)
            for _ in range(repeat):
                t = time.perf_counter()
                conn.execute(sql, args).fetchall()
                s.base_ms.append((time.perf_counter() - t) * 1000)
        conn.rollback()


def _http(env: BenchEnv, todo: list[Shape], repeat: int, scoped_key: str) -> dict[str, float]:
    port = free_port()
    web = env.start("web", ["web", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", web)
    deep: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=60) as c, \
            psycopg.connect(env.database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for s in todo:
            key = scoped_key if s.scoped else "bench-key"
            s.plan = _explain(conn, s.filt, ("rare",) if s.scoped else None)
            for _ in range(repeat):
                t = time.perf_counter()
                r = c.get(f"/v1/notifications?{s.query}", headers={"Authorization": f"Bearer {key}"})
                s.http_ms.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"{s.name}: HTTP {r.status_code} {r.text[:200]}")
                s.rows = len(r.json()["items"])
        # Deep paging: follow the cursor chain 200 pages (20,000 jobs) down.
        cursor, times = None, []
        for _ in range(200):
            t = time.perf_counter()
            page = c.get("/v1/notifications" + (f"?cursor={cursor}" if cursor else ""),
                         headers={"Authorization": "Bearer bench-key"}).json()
            times.append((time.perf_counter() - t) * 1000)
            cursor = page["next_cursor"]
            if cursor is None:
                break
        deep = {"p50": statistics.median(times), "p99": percentile(times, 0.99) or 0.0}
    env.stop([web])
    return deep


def run(rows: int = 10_000_000, repeat: int = 20) -> None:
    with bench_env("listing", senders=SENDERS, extra_env={"WANOTIFY_API_KEYS": "bench-key"}) as env:
        rate = fill(env.database_url, rows)
        console.print(f"filled {rows:,} jobs at {rate:,.0f} rows/s")
        built = rebuild(env.database_url)
        console.print("index build (migration 0011 on this table): "
                      + ", ".join(f"{k} {v:.1f} s" for k, v in built.items()))
        scoped = create_key(f"bench-scoped-{uuid.uuid4().hex[:6]}", senders=["rare"]).key
        todo = shapes(datetime.now(UTC))
        deep = _http(env, todo, repeat, scoped)
        _baseline(env.database_url, todo, max(3, repeat // 4))
        # Last: its jobs are the newest, and would be every page's first rows above.
        with_ix, without_ix = intake_cost(env.database_url)
        console.print(f"intake (notify_many, 20,000 jobs, 3 alternated pairs) into this table: "
                      f"{statistics.median(with_ix):,.0f} jobs/s with the listing's indexes, "
                      f"{statistics.median(without_ix):,.0f} without (× {statistics.median(with_ix) / statistics.median(without_ix):.2f}); "
                      f"runs {[round(x) for x in with_ix]} / {[round(x) for x in without_ix]}")
    t = Table(title=f"GET /v1/notifications on {rows:,} jobs ({repeat} asks each; baseline: the listing's "
                    "indexes dropped, in-process)")
    for col in ("shape", "rows", "HTTP p50 ms", "HTTP p99 ms", "plan", "no listing index: median ms", "its plan"):
        t.add_column(col, justify="right" if "ms" in col or col == "rows" else "left")
    for s in todo:
        t.add_row(s.name, str(s.rows), f"{statistics.median(s.http_ms):.1f}", f"{percentile(s.http_ms, 0.99):.1f}",
                  s.plan, f"{statistics.median(s.base_ms):.1f}", s.base_plan)
    t.add_row("200 pages down the cursor chain", "100", f"{deep['p50']:.1f}", f"{deep['p99']:.1f}",
              "(each page)", "", "")
    console.print(t)
