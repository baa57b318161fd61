"""Flower is behind authentication by default; open only on loopback and only when asked."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from wanotify.devtools.procs import Proc, free_port, wait_http
from wanotify.ops.flower_auth import FlowerAuthError, resolve


def test_generated_password_is_kept_private_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state" / "wanotify"
    first = resolve(None, "0.0.0.0", directory=state)
    assert first.basic_auth is not None
    user, _, password = first.basic_auth.partition(":")
    assert user == "ops" and len(password) >= 32
    path = state / "flower-auth"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert password not in first.notice and str(path) in first.notice
    again = resolve("", "127.0.0.1", directory=state)  # an empty setting is no setting
    assert again.basic_auth == first.basic_auth
    assert password not in again.notice


def test_a_readable_password_file_is_refused(tmp_path: Path) -> None:
    resolve(None, "127.0.0.1", directory=tmp_path)
    (tmp_path / "flower-auth").chmod(0o644)
    with pytest.raises(FlowerAuthError, match="readable by others"):
        resolve(None, "127.0.0.1", directory=tmp_path)


def test_configured_credentials_win_and_are_checked(tmp_path: Path) -> None:
    got = resolve("ops:s3cret, dev:other", "0.0.0.0", directory=tmp_path)
    assert got.basic_auth == "ops:s3cret,dev:other"
    assert "s3cret" not in got.notice
    assert not (tmp_path / "flower-auth").exists()
    for bad in ("ops", "ops:", ":pw", ","):
        with pytest.raises(FlowerAuthError, match=r"user:password|empty"):
            resolve(bad, "127.0.0.1", directory=tmp_path)


@pytest.mark.parametrize("address", ["0.0.0.0", "10.1.2.3", "::", "flower.example.com"])
def test_no_auth_is_refused_beyond_loopback(tmp_path: Path, address: str) -> None:
    with pytest.raises(FlowerAuthError, match="loopback"):
        resolve(None, address, no_auth=True, directory=tmp_path)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "localhost"])
def test_no_auth_on_loopback_is_allowed_when_asked(tmp_path: Path, address: str) -> None:
    got = resolve(None, address, no_auth=True, directory=tmp_path)
    assert got.basic_auth is None and "WITHOUT authentication" in got.notice
    with pytest.raises(FlowerAuthError, match="contradicts"):
        resolve("ops:pw", address, no_auth=True, directory=tmp_path)


def test_cli_refuses_no_auth_on_all_interfaces(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    env.pop("WANOTIFY_FLOWER_BASIC_AUTH", None)
    out = subprocess.run([sys.executable, "-m", "wanotify", "flower", "--address", "0.0.0.0", "--no-auth"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "loopback" in out.stderr


@pytest.mark.slow
def test_flower_starts_behind_a_generated_password(services: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env: dict[str, Any] = {**os.environ, "XDG_STATE_HOME": str(tmp_path),
                           "WANOTIFY_FLOWER_DB": str(tmp_path / f"flower-{uuid.uuid4().hex[:6]}.db")}
    env.pop("WANOTIFY_FLOWER_BASIC_AUTH", None)
    log = tmp_path / "flower.log"
    flower = Proc("flower-auth", ["flower", "--port", str(port)], env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthcheck", flower, timeout=40)
        secret_file = tmp_path / "wanotify" / "flower-auth"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        user, _, password = secret_file.read_text().strip().partition(":")
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/", auth=(user, "wrong")).status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/", auth=(user, password)).status_code == 200
        # The password is in the file only: not in the output, not on the command line.
        text = log.read_text()
        assert str(secret_file) in text
        assert password not in text and base64.b64encode(password.encode()).decode() not in text
        cmdline = Path(f"/proc/{flower.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline
    finally:
        flower.stop()
