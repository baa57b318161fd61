"""Test fixtures: real Redis, real Postgres (the local ones, or embedded), real processes.

The suite uses its own database (``wanotify_test``) and Redis database 15, so it never
touches a developer's data. ``WANOTIFY_TEST_DATABASE`` and ``WANOTIFY_TEST_REDIS_DB`` pick
others, so that two checkouts can run their suites side by side. The stack fixture starts the sandbox, the web app (uvicorn) and
a Celery worker as separate processes, exactly as a user would.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

# Settings every process of the test run shares; set before wanotify reads them.
TEST_ENV = {
    "WANOTIFY_APP_SECRET": "test-app-secret",
    "WANOTIFY_VERIFY_TOKEN": "test-verify-token",
    "WANOTIFY_API_KEYS": "test-key-1,test-key-2",
    "WANOTIFY_LOG_JSON": "true",
    "WANOTIFY_LEASE_S": "6",
    "WANOTIFY_SWEEP_INTERVAL_S": "2",
    "WANOTIFY_BROKER_VISIBILITY_TIMEOUT_S": "15",
    "WANOTIFY_SANDBOX_WEBHOOK_DELAY_MS": "40",
    "WANOTIFY_DISPATCH_SLICE_S": "3",
    "WANOTIFY_OTP_DELIVERY_DEADLINE_S": "3",
    # Quiet hours would hold marketing jobs for hours when the suite runs at night where the
    # test numbers live; the compliance tests turn them on for their own worker.
    "WANOTIFY_QUIET_HOURS": "off",
    "WANOTIFY_SENDERS": json.dumps([
        {"name": "main", "phone_number_id": "106540352242922", "waba_id": "102290129340398",
         "display_phone_number": "+15550100001", "access_token": "sandbox-token-main", "mps": 80},
        {"name": "backup", "phone_number_id": "106540352242923", "waba_id": "102290129340398",
         "display_phone_number": "+15550100002", "access_token": "sandbox-token-backup", "mps": 80},
    ]),
}
for _k, _v in TEST_ENV.items():
    os.environ[_k] = _v
for _k in ("WANOTIFY_TEMPLATES", "WANOTIFY_SANDBOX_FAILURES", "WANOTIFY_SMS_URL", "WANOTIFY_SMTP_URL"):
    os.environ.pop(_k, None)

API_KEY = "test-key-1"


def _with_redis_db(url: str, db: int) -> str:
    base, _, tail = url.rpartition("/")
    if tail.isdigit() and base.startswith("redis"):
        return f"{base}/{db}"
    return f"{url.rstrip('/')}/{db}"


HOLDER = """
import json, os, sys
from wanotify.devtools.embedded import resolve_services
u = resolve_services(database_name=os.environ.get("WANOTIFY_TEST_DATABASE", "wanotify_test"))
print(json.dumps({"redis_url": u.redis_url, "database_url": u.database_url, "started": u.started}), flush=True)
sys.stdin.read()  # hold the servers until the test run closes our stdin (or dies)
"""


@pytest.fixture(scope="session")
def services() -> Iterator[dict[str, str]]:
    """Redis and Postgres for the whole run (embedded ones if nothing answers).

    Embedded servers are held by a small child process, so the test process itself stays
    free to start its own in the embedded-server tests; they stop when that child exits.
    """
    import json
    import subprocess
    import sys

    from wanotify.config import reset_settings

    user_db = os.environ.get("WANOTIFY_DATABASE_URL")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout is not None and holder.stdin is not None
    line = holder.stdout.readline()
    if not line:
        raise RuntimeError("could not resolve Redis/Postgres for the tests (see the output above)")
    urls = json.loads(line)
    db_url = urls["database_url"]
    if user_db:
        # Never run the suite in a user's own database: use a sibling named *_test.
        from sqlalchemy import make_url

        u = make_url(user_db)
        db_url = u.set(database=f"{u.database}_test").render_as_string(hide_password=False)
    redis_url = _with_redis_db(urls["redis_url"], int(os.environ.get("WANOTIFY_TEST_REDIS_DB", "15")))
    os.environ["WANOTIFY_DATABASE_URL"] = db_url
    os.environ["WANOTIFY_REDIS_URL"] = redis_url
    reset_settings()
    from wanotify.db import dispose_engine

    dispose_engine()  # an engine made while a test module was imported used the default URL
    from wanotify.redis import reset_clients

    reset_clients()  # and the process's Redis client (a bare machine: no Redis at the default)
    import sys

    if "wanotify.queues.app" in sys.modules:  # likewise the Celery app's broker
        from wanotify.queues.app import follow_settings

        follow_settings()
    _fresh_database(db_url)
    import redis as _redis

    _redis.Redis.from_url(redis_url).flushdb()
    try:
        yield {"database_url": db_url, "redis_url": redis_url}
    finally:
        from wanotify.db import dispose_engine

        dispose_engine()
        holder.stdin.close()
        try:
            holder.wait(30)
        except subprocess.TimeoutExpired:
            holder.kill()


def drop_database(url: str) -> None:
    import psycopg
    from sqlalchemy import make_url

    u = make_url(url)
    admin = u.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')


def _fresh_database(url: str) -> None:
    from wanotify.db.migrate import upgrade

    drop_database(url)
    upgrade(url)


@pytest.fixture()
def db(services: dict[str, str]) -> Iterator[Any]:
    from wanotify.db import session_scope

    yield session_scope


@pytest.fixture()
def no_stack_ingest(services: dict[str, str]) -> Iterator[None]:
    """Hold the ingest kick slots for a test that ingests stored bodies by hand: the stack's
    web then queues no ingest task, so no stack worker takes those bodies in between (an
    ingest task takes every body waiting, not only its own)."""
    release = hold_kick_slots(services["redis_url"])
    yield
    release()


def hold_kick_slots(redis_url: str) -> Callable[[], None]:
    """Take every ingest kick slot (a task frees only its own); the release."""
    import redis as _redis

    from wanotify.inbound.ingest import KICK_SLOT_KEY, KICK_SLOTS

    r = _redis.Redis.from_url(redis_url)
    keys = [KICK_SLOT_KEY.format(k) for k in range(KICK_SLOTS)]
    for key in keys:
        r.set(key, "held by a test", px=600_000)
    return lambda: r.delete(*keys) and None


@pytest.fixture()
def redis_client(services: dict[str, str]) -> Any:
    import redis as _redis

    return _redis.Redis.from_url(services["redis_url"])


class Mailbox:
    """A real SMTP server (aiosmtpd) that keeps what it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        from wanotify.devtools.procs import free_port

        self.messages: list[Any] = []
        self.port = free_port()
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                import email

                outer.messages.append(email.message_from_bytes(envelope.content))
                return "250 Message accepted for delivery"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@dataclass
class Stack:
    web_url: str
    sandbox_url: str
    env: dict[str, str]
    procs: dict[str, Any]
    logdir: Path
    mailbox: Any = None

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.web_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15)

    def sandbox(self) -> httpx.Client:
        return httpx.Client(base_url=self.sandbox_url, timeout=15)

    def start_worker(self, name: str, extra_env: dict[str, str] | None = None) -> Any:
        from wanotify.devtools.procs import Proc, wait_worker

        env = {**self.env, **(extra_env or {})}
        node = f"{name}-{uuid.uuid4().hex[:6]}"
        p = Proc(name, ["worker", "--concurrency", "8", "-n", f"{node}@%h"], env, self.logdir / f"{name}.log")
        wait_worker(env["WANOTIFY_REDIS_URL"], p, timeout=40, node=node)
        self.procs[name] = p
        return p


@pytest.fixture(scope="session")
def stack(services: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The sandbox, the web app and one worker, as separate processes."""
    from wanotify.config import reset_settings
    from wanotify.devtools.procs import Proc, free_port, wait_http

    logdir = tmp_path_factory.mktemp("logs")
    web_port, sb_port = free_port(), free_port()
    mailbox = Mailbox()
    os.environ["WANOTIFY_GRAPH_API_URL"] = f"http://127.0.0.1:{sb_port}"
    os.environ["WANOTIFY_SMS_URL"] = f"http://ACtest0000:sms-token@127.0.0.1:{sb_port}"
    os.environ["WANOTIFY_SMTP_URL"] = f"smtp://127.0.0.1:{mailbox.port}"
    os.environ["WANOTIFY_WORKER_METRICS_PORT"] = str(free_port())
    reset_settings()
    env = dict(os.environ)
    procs: dict[str, Any] = {}
    st = Stack(f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{sb_port}", env, procs, logdir, mailbox)
    try:
        procs["sandbox"] = Proc("sandbox", ["sandbox", "--port", str(sb_port), "--webhook-url",
                                            f"http://127.0.0.1:{web_port}/webhooks/whatsapp"], env,
                                logdir / "sandbox.log")
        procs["web"] = Proc("web", ["web", "--port", str(web_port)], env, logdir / "web.log")
        wait_http(f"{st.sandbox_url}/_sandbox/healthz", procs["sandbox"])
        wait_http(f"{st.web_url}/healthz", procs["web"])
        st.start_worker("worker")
        yield st
    finally:
        for p in list(procs.values()):
            p.stop()
        mailbox.stop()
        print(f"\nprocess logs: {logdir}")


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or pred} (last: {last!r})")


def publish_and_find(db_url: str, jobs: list[dict[str, Any]], broker: str, timeout: float = 60.0,
                     **transport: Any) -> list[str]:
    """Publish jobs as a producer in another codebase does (a plain Celery app,
    ``send_task("wanotify.notify", args=[body], queue="notify")``; each job needs an
    ``idempotency_key``), wait until the workers stored them all, and return their ids."""
    import sqlalchemy
    from celery import Celery

    producer = Celery("producer", broker=broker)
    producer.conf.task_serializer = "json"
    producer.conf.broker_transport_options = transport
    try:
        for job in jobs:
            producer.send_task("wanotify.notify", args=[job], queue="notify")
    finally:
        producer.close()
    keys = [j["idempotency_key"] for j in jobs]
    engine = sqlalchemy.create_engine(db_url)
    try:
        def stored() -> list[str]:
            with engine.connect() as conn:
                rows = conn.execute(sqlalchemy.text("SELECT id::text FROM notifications WHERE idempotency_key"
                                                    " = ANY(:k)"), {"k": keys}).scalars().all()
            return list(rows) if len(rows) == len(keys) else []
        found: list[str] = wait_for(stored, timeout=timeout, interval=0.25, what="the queued jobs stored")
        return found
    finally:
        engine.dispose()


def statuses_at(db_url: str, ids: list[str]) -> dict[str, str]:
    """Job statuses in the database at ``db_url`` (a stack of the test's own)."""
    import sqlalchemy
    from sqlalchemy import text

    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id::text, status FROM notifications"
                                     " WHERE id = ANY(CAST(:i AS uuid[]))"), {"i": ids}).all()
    finally:
        engine.dispose()
    return {r[0]: r[1] for r in rows}


def statuses(session_scope: Any, ids: list[str]) -> dict[str, str]:
    from sqlalchemy import text

    with session_scope() as s:
        rows = s.execute(text("SELECT id::text, status FROM notifications WHERE id = ANY(CAST(:ids AS uuid[]))"),
                         {"ids": ids}).all()
    return {r[0]: r[1] for r in rows}


# Cases tried by the property-based and schema-driven tests, by suite (printed at the end
# of the run, so the CI log shows how much hostile input the run threw at the app).
FUZZ_COUNTS: dict[str, int] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FUZZ_COUNTS:
        terminalreporter.section("hostile input")
        for name, n in sorted(FUZZ_COUNTS.items()):
            terminalreporter.write_line(f"{name}: {n} cases tried")
        terminalreporter.write_line(f"total: {sum(FUZZ_COUNTS.values())} cases")
