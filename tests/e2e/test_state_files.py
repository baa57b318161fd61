"""Nothing wanotify runs writes into the current folder (a checkout, or a read-only /app)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wanotify.cli.processes import _with_beat_schedule
from wanotify.config import Settings


def test_beat_schedule_goes_to_the_state_folder(services: dict[str, str], tmp_path: Path) -> None:
    cwd, state = tmp_path / "checkout", tmp_path / "state"
    cwd.mkdir()
    os.chmod(cwd, 0o555)  # as /app in the image: the process may not write here
    env = {**os.environ, "WANOTIFY_STATE_DIR": str(state)}
    proc = subprocess.Popen([sys.executable, "-m", "wanotify", "beat", "--loglevel", "INFO"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(state.glob("celerybeat-schedule*")):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        time.sleep(1.5)  # a beat that crashes on its schedule file does so at once
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert list(state.glob("celerybeat-schedule*")), out
    assert list(cwd.iterdir()) == []
    assert "Permission denied" not in out


@pytest.mark.parametrize(("args", "kept"), [
    ([], False), (["-B"], False), (["--schedule", "/x"], True), (["--schedule=/x"], True),
    (["-s", "/x"], True), (["-s/x"], True), (["--scheduler", "custom"], False),
])
def test_schedule_option_is_added_unless_given(tmp_path: Path, args: list[str],
                                                kept: bool) -> None:
    s = Settings(state_dir=tmp_path / "st")
    out = _with_beat_schedule(list(args), s)
    if kept:
        assert out == args
    else:
        assert out == [*args, f"--schedule={tmp_path / 'st' / 'celerybeat-schedule'}"]
        assert (tmp_path / "st").is_dir()
