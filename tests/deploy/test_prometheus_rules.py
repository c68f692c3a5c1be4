"""Prometheus rules and dashboards: promtool checks them, its unit tests pass, and every metric
they read is one a service really exports (a renamed metric would leave an alert silent)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.infra import ROOT, require

RULES = ROOT / "helm" / "marquee" / "files" / "prometheus" / "rules"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests"
DASHBOARDS = ROOT / "helm" / "marquee" / "files" / "grafana" / "dashboards"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool (Debian package 'prometheus')."""
    require("promtool", "Debian package 'prometheus'")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def exported_metrics() -> set[str]:
    """Every marquee_* metric name the services define, with the suffixes Prometheus adds."""
    names: set[str] = set()
    for path in (ROOT / "services").glob("*/metrics.py"):
        for m in re.finditer(r"[\"'](marquee_[a-z0-9_]+)[\"']", path.read_text()):
            names.add(m[1].removesuffix("_total"))
    out = set()
    for n in names:
        out |= {n, f"{n}_total", f"{n}_bucket", f"{n}_count", f"{n}_sum", f"{n}_created"}
    return out


def referenced(text: str) -> set[str]:
    """marquee_* metric names a PromQL text reads (recording rules are marquee:...)."""
    return set(re.findall(r"\b(marquee_[a-z0-9_]+)", text))


def test_rules_pass_promtool_check() -> None:
    files = sorted(RULES.glob("*.rules.yml"))
    assert files
    out = promtool("check", "rules", *map(str, files))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_rules_unit_tests_pass() -> None:
    tests = sorted(RULE_TESTS.glob("*.test.yml"))
    assert tests
    out = promtool("test", "rules", *map(str, tests))
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_wrong_expectation_fails_the_rule_tests(tmp_path: Path) -> None:
    """The unit tests can fail: the same file expecting the fast burn when healthy does."""
    text = (RULE_TESTS / "marquee.test.yml").read_text()
    text = text.replace("../rules/marquee.rules.yml", str(RULES / "marquee.rules.yml"))
    broken = text.replace(
        "      - eval_time: 150m\n        alertname: MarqueeAvailabilityBudgetBurnFast\n"
        "        exp_alerts: []",
        "      - eval_time: 150m\n        alertname: MarqueeAvailabilityBudgetBurnFast\n"
        "        exp_alerts:\n          - exp_labels: {severity: page, slo: availability}",
    )
    assert broken != text
    (tmp_path / "broken.test.yml").write_text(broken)
    out = promtool("test", "rules", str(tmp_path / "broken.test.yml"))
    assert out.returncode != 0


def test_every_alert_has_severity_summary_and_description() -> None:
    import yaml

    alerts = [
        rule
        for path in RULES.glob("*.rules.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert len(alerts) >= 15
    for rule in alerts:
        assert rule["labels"]["severity"] in {"page", "ticket", "warning", "info"}, rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule
    names = {r["alert"] for r in alerts}
    # What the platform promises to alert on.
    for needed in (
        "MarqueeAvailabilityBudgetBurnFast",
        "MarqueeLatencyBudgetBurnFast",
        "MarqueeRouterFallbackRateHigh",
        "MarqueeSampleRatioMismatch",
        "MarqueeIngestLagHigh",
        "MarqueeIngestQuarantineRateHigh",
        "MarqueeModelStale",
        "MarqueeMonitorSampleRatioMismatch",
        "MarqueeMonitorDecision",
    ):
        assert needed in names


def test_rules_read_only_metrics_the_services_export() -> None:
    known = exported_metrics()
    text = "\n".join(p.read_text() for p in RULES.glob("*.rules.yml"))
    missing = referenced(text) - known
    assert not missing, f"rules read metrics no service exports: {sorted(missing)}"


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.stem)
def test_dashboard_is_well_formed(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["uid"].startswith("marquee-") and board["title"].startswith("Marquee / ")
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) >= 6
    known = exported_metrics()
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            missing = referenced(target["expr"]) - known
            assert not missing, f"{panel['title']}: unknown metrics {sorted(missing)}"
    # Every panel's query parses: promtool checks it as a recording rule.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:panel{p['id']}_{t['refId']}", "expr": t["expr"]}
                    for p in board["panels"]
                    for t in p["targets"]
                ],
            }
        ]
    }
    tmp = ROOT / ".run" / f"dashboard-{path.stem}.rules.yml"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(rules))
    out = promtool("check", "rules", str(tmp))
    assert out.returncode == 0, out.stdout + out.stderr


def test_experiment_dashboard_shows_every_monitor_metric() -> None:
    """The monitor's verdict is on the experiment dashboard: each of its metrics has a panel."""
    text = (ROOT / "services" / "monitor" / "metrics.py").read_text()
    names = re.findall(r"[\"'](marquee_monitor_[a-z_]+)[\"']", text)
    defined = {n.removesuffix("_total") for n in names}
    assert len(defined) >= 14
    board = json.loads((DASHBOARDS / "marquee-experiment.json").read_text())
    shown = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for panel in board["panels"]
        for target in panel["targets"]
        for name in referenced(target["expr"])
    }
    assert not defined - shown, f"monitor metrics without a panel: {sorted(defined - shown)}"
