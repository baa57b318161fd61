"""docker-compose.yml, the Dockerfile and the Procfile stay true to the CLI and the settings.

These read the files only (tests/e2e/test_compose_stack.py brings the stack up for real):
every command is a real `wanotify` verb whose options parse, every WANOTIFY_* variable is a
setting, every long-running service has a healthcheck and a restart policy, state lives in
named volumes, no secret has a working default, ports are published on loopback unless
asked, one image is built once, and the build context leaves the checkout's private files out.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from wanotify.cli.main import app
from wanotify.config import Settings

ROOT = Path(__file__).resolve().parents[2]
LONG_RUNNING = ["postgres", "redis", "web", "worker", "beat", "flower", "sandbox"]
WANOTIFY_SERVICES = ["migrate", "web", "worker", "beat", "flower", "sandbox"]
SECRETS = ["WANOTIFY_APP_SECRET", "WANOTIFY_VERIFY_TOKEN", "WANOTIFY_API_KEYS"]
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
    for _, cmd in _procfile().items():
        for part in cmd.split("&&"):
            argv = shlex.split(re.sub(r"\$\{[A-Z_]+:-([0-9]+)\}", r"\1", part))
            _check_argv(argv)
            assert "--no-auth" not in argv


def _procfile() -> dict[str, str]:
    lines = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, cmd = line.split(":", 1)
        lines[name] = cmd.strip()
    return lines


def test_procfile_mirrors_compose_and_migrates_once_per_release() -> None:
    procs = _procfile()
    services = _compose()["services"]
    optional = {name for name, svc in services.items() if svc.get("profiles")}  # monitoring
    assert optional == {"prometheus", "grafana"}
    assert set(procs) - {"release"} == set(services) - {"postgres", "redis", "migrate"} - optional
    # Migrations run once per deploy (a release phase), never in front of every web process.
    assert shlex.split(procs["release"])[:2] == ["wanotify", "migrate"]
    assert "--wait" in procs["release"]
    assert not any("migrate" in cmd for name, cmd in procs.items() if name != "release")
    assert services["migrate"]["command"][:3] == ["wanotify", "migrate", "--wait"]


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_compose_long_running_services_restart(service: str) -> None:
    assert _compose()["services"][service]["restart"] == "unless-stopped"


def test_compose_state_is_in_named_volumes() -> None:
    doc = _compose()
    services = doc["services"]
    named = set(doc["volumes"])

    def mounts(name: str) -> dict[str, str]:
        pairs = [v.split(":")[:2] for v in services[name].get("volumes", [])]
        return {target: source for source, target in pairs}

    assert mounts("postgres")["/var/lib/postgresql/data"] in named
    # --appendonly without a volume would keep the broker's queues in the container only.
    assert "--appendonly" in services["redis"]["command"]
    assert mounts("redis")["/data"] in named
    # Flower's database and generated password live in the image's state folder.
    state_dir = re.search(r"WANOTIFY_STATE_DIR=(\S+)", (ROOT / "Dockerfile").read_text())
    assert state_dir, "the image sets WANOTIFY_STATE_DIR"
    assert mounts("flower")[state_dir.group(1)] in named


def test_image_state_dir_belongs_to_the_service_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\S+)", text, re.M)
    state_dir = re.search(r"WANOTIFY_STATE_DIR=(\S+)", text)
    assert user and state_dir
    assert re.search(rf"install -d .*-o {user.group(1)} .*{re.escape(state_dir.group(1))}", text)


def test_compose_secrets_have_no_working_defaults() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text
    env = _compose()["x-wanotify-env"]
    for name in SECRETS:
        # ${VAR:?message}: compose refuses to start while the variable is unset or empty.
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", env[name]), (name, env[name])
    assert re.search(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", env["WANOTIFY_DATABASE_URL"])
    pg = _compose()["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert pg.startswith("${POSTGRES_PASSWORD:?"), pg
    # .env.example names them all, with no value a stack would start with.
    example = dict(
        line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in [*SECRETS, "POSTGRES_PASSWORD"]:
        assert example.get(name) == "", name


def test_compose_publishes_on_loopback_by_default() -> None:
    for name, svc in _compose()["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("${WANOTIFY_PUBLISH_ADDR:-127.0.0.1}:"), (name, port)
    assert "WANOTIFY_PUBLISH_ADDR" in (ROOT / ".env.example").read_text()


def test_compose_builds_one_image_once() -> None:
    services = _compose()["services"]
    built = [name for name, svc in services.items() if "build" in svc]
    assert built == ["migrate"], built
    for name in WANOTIFY_SERVICES:
        assert services[name]["image"] == "wanotify:local", name
        if name != "migrate":
            # After the build: compose 1.x would otherwise try to pull wanotify:local.
            cond = services[name]["depends_on"]["migrate"]["condition"]
            assert cond == "service_completed_successfully", name


def test_compose_postgres_healthcheck_over_tcp() -> None:
    test = " ".join(_compose()["services"]["postgres"]["healthcheck"]["test"])
    assert "pg_isready -h 127.0.0.1" in test


def test_compose_worker_metrics_port_is_configurable() -> None:
    env = _compose()["x-wanotify-env"]
    assert env["WANOTIFY_WORKER_METRICS_PORT"] == "${WANOTIFY_WORKER_METRICS_PORT:-9809}"
    assert _compose()["services"]["worker"]["expose"] == ["9809"]


def test_dockerignore_keeps_private_files_out() -> None:
    patterns = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for private in (".venv", ".env", ".git", "wheels"):
        assert private in patterns, private


def test_image_installs_pinned_dependencies_before_the_source() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    lock = lines.index("COPY requirements.lock ./")
    install = next(i for i, ln in enumerate(lines) if "pip install" in ln and "requirements.lock" in ln)
    src = lines.index("COPY src ./src")
    project = next(i for i, ln in enumerate(lines) if "pip install" in ln and "--no-deps ." in ln)
    assert lock < install < src < project
    pins = [
        ln for ln in (ROOT / "requirements.lock").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    assert pins and all(re.fullmatch(r"[a-z0-9][a-z0-9._-]*==[^=\s;]+( ; .+)?", p) for p in pins), pins
    # Every runtime dependency of pyproject.toml is pinned there.
    names = {p.split("==")[0] for p in pins}
    # Pinned for every Python 3.11, not only this one (Debian's is 3.11.2; redis needs
    # async-timeout before 3.11.3): what a marker excludes here is kept with its marker.
    assert any(p.startswith("async-timeout==") and "python_full_version" in p for p in pins)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.match(r"[A-Za-z0-9_.-]+", dep)
        assert name and name.group(0).lower().replace("_", "-") in names, dep
def test_compose_prometheus_uses_the_shipped_config() -> None:
    """Once compose has a `prometheus` service, it mounts deploy/prometheus (prometheus.yml
    and the alert rules it loads) and publishes 9090."""
    prom = _compose()["services"].get("prometheus")
    if prom is None:
        pytest.skip("docker-compose.yml has no prometheus service yet")
    assert any(v.split(":")[0] == "./deploy/prometheus" for v in prom["volumes"]), prom["volumes"]
    assert any(p.split(":")[-1] == "9090" for p in prom["ports"]), prom["ports"]

