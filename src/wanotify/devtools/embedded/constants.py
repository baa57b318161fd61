"""Names, defaults and limits shared by the embedded-server modules."""

from __future__ import annotations

import signal

REDIS_ENV = "WANOTIFY_REDIS_URL"
DATABASE_ENV = "WANOTIFY_DATABASE_URL"
DIR_ENV = "WANOTIFY_EMBEDDED_DIR"
# Testing hook: start servers without PR_SET_PDEATHSIG, to simulate servers that outlive
# their owner (the stale-server clean-up is tested with it).
NO_PDEATHSIG_ENV = "WANOTIFY_EMBEDDED_TEST_NO_PDEATHSIG"

DEFAULT_REDIS_HOST, DEFAULT_REDIS_PORT = "127.0.0.1", 6379
DEFAULT_REDIS_URL = f"redis://{DEFAULT_REDIS_HOST}:{DEFAULT_REDIS_PORT}/0"
DEFAULT_PG_HOST, DEFAULT_PG_PORT = "127.0.0.1", 5432
PG_SUPERUSER = "postgres"
PG_SYSTEM_USER = "wanotify-pg"
INSTALL_HINT = "pip install 'wanotify[embedded]'"

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
INITDB_TIMEOUT_S = 120.0
MAX_SLOTS = 16
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
_LOG_TAIL_LINES = 40
_STATE_FILE = "state.json"
_VALKEY_PIDFILE = "valkey.pid"

_PR_SET_PDEATHSIG = 1

REDIS, POSTGRES = "redis", "postgres"
_STOP_SIGNALS: dict[str, signal.Signals] = {
    # Postgres: SIGINT is the fast shutdown (SIGTERM waits for every client to leave).
    POSTGRES: signal.SIGINT,
    REDIS: signal.SIGTERM,
}
_PROCESS_NAMES = {POSTGRES: "postgres", REDIS: "valkey-server"}
