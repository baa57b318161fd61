"""The alerting files under deploy/ and what the tests need to check them: promtool (found,
or installed from Debian's `prometheus` package when running as root), and the PromQL of
the alert rules and of the Grafana dashboard with the metric names each references."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
PROMETHEUS_CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "wanotify.json"

# What Grafana substitutes before the query reaches Prometheus.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$sender": ".*"}
# Series Prometheus itself makes; every other name must be one the app exposes.
PROMETHEUS_SERIES = {"up"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_METRIC = re.compile(r"(?<![A-Za-z0-9_:])(wanotify_[A-Za-z0-9_]+|up)(?![A-Za-z0-9_:(])")
_LABEL_VALUES = re.compile(r"^label_values\((\w+),\s*\w+\)$")


def promtool() -> str:
    """The promtool binary; installed with apt (package `prometheus`) when missing and we
    are root, as CI does; else the test is skipped with the reason."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("promtool not found (Debian: apt-get install prometheus) and not root to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    ok = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"],
                        capture_output=True, text=True, env=env, timeout=600)
    if ok.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        ok = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"],
                            capture_output=True, text=True, env=env, timeout=600)
    found = shutil.which("promtool")
    if not found:
        pytest.skip(f"promtool missing and apt-get install prometheus failed: {ok.stderr[-500:]}")
    return found


def run_promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def dashboard_exprs() -> list[str]:
    """Every panel query, with Grafana's variables replaced by what Grafana would send."""
    out = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"unknown Grafana variable in {target['expr']!r}"
            out.append(expr)
    return out


def dashboard_variable_metrics() -> list[str]:
    """Metrics read by the dashboard's template variables (`label_values(metric, label)`)."""
    names = []
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = _LABEL_VALUES.match(q)
        assert m, f"variable {var['name']}: not a label_values() query: {q!r}"
        names.append(m.group(1))
    return names


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects (label values and strings left out)."""
    return set(_METRIC.findall(_STRING.sub('""', expr)))
