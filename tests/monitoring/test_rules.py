"""The alert rules pass `promtool check rules`, and each alert's unit test in prometheus-rules.test.yaml."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.monitoring.conftest import FILES
from tests.monitoring.exported import exported_series, referenced_metrics

RULES = FILES / "prometheus-rules.yaml"
RULE_TESTS = FILES / "prometheus-rules.test.yaml"


def run(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, check=False, cwd=FILES)


def test_promtool_check_rules(promtool: Path) -> None:
    result = run(promtool, "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool: Path) -> None:
    result = run(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def alerts() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_firing_unit_test_and_a_quiet_one() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(alerts()) <= firing, set(alerts()) - firing
    assert set(alerts()) <= quiet, set(alerts()) - quiet


def test_rules_only_use_metrics_the_controller_exports() -> None:
    exported = exported_series()
    rules = yaml.safe_load(RULES.read_text())["groups"]
    for group in rules:
        for rule in group["rules"]:
            missing = referenced_metrics(rule["expr"]) - exported
            assert not missing, f"{rule.get('alert')}: {sorted(missing)}"


def test_alerts_have_severity_summary_and_description() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
