"""deploy/prometheus and deploy/grafana: the rules load, their unit tests pass, and every
PromQL expression of the alerts and of the dashboard parses (promtool). That each metric
they name is really exposed is tests/e2e/test_alerts_metrics_e2e.py."""

from __future__ import annotations

from pathlib import Path

import yaml

from alerting import (
    ALERTS,
    ALERTS_TEST,
    PROMETHEUS_CONFIG,
    alert_rules,
    dashboard,
    dashboard_exprs,
    metric_names,
    run_promtool,
)


def test_promtool_check_rules() -> None:
    out = run_promtool("check", "rules", str(ALERTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


def test_promtool_unit_tests_of_the_alerts() -> None:
    out = run_promtool("test", "rules", str(ALERTS_TEST))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    doc = yaml.safe_load(ALERTS_TEST.read_text())
    fired = {t["alertname"] for g in doc["tests"] for t in g["alert_rule_test"] if t.get("exp_alerts")}
    silent = {t["alertname"] for g in doc["tests"] for t in g["alert_rule_test"] if not t.get("exp_alerts")}
    names = {r["alert"] for r in alert_rules()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown staying silent"


def test_every_alert_has_for_severity_and_a_runbook() -> None:
    for rule in alert_rules():
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"].get(key), (rule["alert"], key)


def test_prometheus_config_scrapes_web_and_workers_and_loads_the_rules() -> None:
    out = run_promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert out.returncode == 0, out.stdout + out.stderr
    cfg = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["wanotify-web"]["static_configs"][0]["targets"] == ["web:8000"]
    dns = jobs["wanotify-worker"]["dns_sd_configs"][0]
    assert (dns["names"], dns["port"]) == (["worker"], 9809)


def test_every_dashboard_and_alert_expression_parses(tmp_path: Path) -> None:
    """promtool 2.42 has no `promql` verb: the expressions become recording rules of a
    generated rules file, which `check rules` parses."""
    exprs = dashboard_exprs() + [r["expr"] for r in alert_rules()]
    rules = {"groups": [{"name": "parse", "rules": [
        {"record": f"wanotify:parse_check:{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump(rules))
    out = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in out.stdout


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The parse check above would catch a typo: promtool refuses what does not parse."""
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [
        {"record": "wanotify:bad", "expr": "sum by (sender (rate(wanotify_sends_total[5m]))"}]}]}))
    out = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert out.returncode != 0


def test_dashboard_has_the_panels_ops_need() -> None:
    doc = dashboard()
    assert doc["uid"] == "wanotify"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for p in doc["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            used |= metric_names(t["expr"])
    for name in ("wanotify_sends_total", "wanotify_enqueue_to_accepted_seconds_bucket",
                 "wanotify_queue_depth", "wanotify_sender_paused", "wanotify_webhook_ingest_lag_seconds_bucket",
                 "wanotify_dead_letters", "wanotify_jobs_recent"):
        assert name in used, name


def test_metric_names_ignore_label_values_and_functions() -> None:
    expr = 'up{job="wanotify_web"} + rate(wanotify_sends_total{error_code="wanotify_x"}[5m]) / wanotify:rec'
    assert metric_names(expr) == {"up", "wanotify_sends_total"}
