"""docker-compose.yml and the Procfile stay true to the CLI and the settings.

No Docker engine runs here, so these check what can be checked without one: every
command is a real `wanotify` verb whose options parse, every WANOTIFY_* variable is a
setting, every long-running service has a healthcheck, and the ports line up.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from wanotify.cli.main import app
from wanotify.config import Settings

ROOT = Path(__file__).resolve().parents[2]
# Services from upstream images (no wanotify command, no WANOTIFY_* environment).
THIRD_PARTY = ("postgres", "redis", "prometheus", "grafana")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _check_argv(argv: list[str]) -> None:
    assert argv[0] == "wanotify", argv
    group: Any = typer.main.get_command(app)
    ctx = group.context_class(group)
    cmd = group.get_command(ctx, argv[1])
    assert cmd is not None, f"unknown verb {argv[1]!r}"
    sub = cmd.make_context(argv[1], list(argv[2:]), parent=ctx, resilient_parsing=False)
    assert sub is not None


def test_compose_commands_are_real_verbs() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        cmd = svc.get("command")
        if cmd and cmd[0] == "wanotify":
            _check_argv(cmd)
        else:
            assert name in THIRD_PARTY, name


def test_compose_environment_names_settings() -> None:
    doc = _compose()
    fields = {f"WANOTIFY_{k.upper()}" for k in Settings.model_fields}
    env = doc["x-wanotify-env"]
    unknown = [k for k in env if k.startswith("WANOTIFY_") and k not in fields]
    assert not unknown, unknown
    for name, svc in doc["services"].items():
        if name not in THIRD_PARTY:
            assert svc["environment"] == env, name


@pytest.mark.parametrize("service", ["postgres", "redis", "web", "worker", "flower", "sandbox"])
def test_compose_long_running_services_have_healthchecks(service: str) -> None:
    svc = _compose()["services"][service]
    assert svc["healthcheck"]["test"], service


def test_compose_ports_match_commands() -> None:
    services = _compose()["services"]
    for name in ("web", "flower", "sandbox"):
        cmd = services[name]["command"]
        port = cmd[cmd.index("--port") + 1]
        assert any(p.split(":")[-1] == port for p in services[name]["ports"]), name
    assert services["flower"]["command"][services["flower"]["command"].index("--address") + 1] == "0.0.0.0"
    # No shipped password: empty means Flower generates one (wanotify.ops.flower_auth).
    assert _compose()["x-wanotify-env"]["WANOTIFY_FLOWER_BASIC_AUTH"] == "${WANOTIFY_FLOWER_BASIC_AUTH:-}"
    assert "--no-auth" not in services["flower"]["command"]


def test_procfile_lines_are_real_verbs() -> None:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip():
            continue
        _, cmd = line.split(":", 1)
        for part in cmd.split("&&"):
            argv = [a for a in shlex.split(part.replace("${PORT:-8000}", "8000")
                                           .replace("${FLOWER_PORT:-5555}", "5555"))]
            _check_argv(argv)
            assert "--no-auth" not in argv


def test_compose_prometheus_uses_the_shipped_config() -> None:
    """Once compose has a `prometheus` service, it mounts deploy/prometheus (prometheus.yml
    and the alert rules it loads) and publishes 9090."""
    prom = _compose()["services"].get("prometheus")
    if prom is None:
        pytest.skip("docker-compose.yml has no prometheus service yet")
    assert any(v.split(":")[0] == "./deploy/prometheus" for v in prom["volumes"]), prom["volumes"]
    assert any(p.split(":")[-1] == "9090" for p in prom["ports"]), prom["ports"]
