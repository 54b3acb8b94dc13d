"""The shipped alert rules (docs/alerts/xfleet.rules.yml): promtool accepts them and their unit
tests pass, they are the alerts of docs/serve.md's table (names, severities, `for`), and the
numbers in their expressions are xfleet.ops.alerts.THRESHOLDS, which `xfleet status` uses.
promtool comes from Debian's `prometheus` package (scripts/test-deps.sh unpacks it into
.venv/opt/prometheus, without installing the server)."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from conftest import ROOT

from xfleet.ops import alerts

RULES = ROOT / "docs" / "alerts" / "xfleet.rules.yml"
RULE_TESTS = ROOT / "docs" / "alerts" / "xfleet.rules.test.yml"
SERVE_DOC = ROOT / "docs" / "serve.md"
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def promtool(*args: str) -> None:
    """Run promtool; fail showing the command, its exit status and its output."""
    unpacked = ROOT / ".venv" / "opt" / "prometheus" / "usr" / "bin" / "promtool"
    exe = shutil.which("promtool") or (str(unpacked) if unpacked.is_file() else None)
    assert exe is not None, ("promtool is not installed: scripts/test-deps.sh unpacks it from "
                             "Debian's `prometheus` package into .venv/opt/prometheus")
    p = subprocess.run([exe, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, (f"$ promtool {' '.join(args)}\nexit {p.returncode}\n"
                               f"--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}")


def seconds(text: str) -> float:
    """A Prometheus duration ('1h', '15m', '1h30m') in seconds."""
    parts = _DURATION.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(int(n) * _UNITS[u] for n, u in parts)


def rules() -> dict[str, dict[str, Any]]:
    """Every alerting rule of the file, by alert name."""
    doc = yaml.safe_load(RULES.read_text())
    out: dict[str, dict[str, Any]] = {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] not in out, f"{rule['alert']} is defined twice"
            out[rule["alert"]] = rule
    return out


def documented() -> dict[str, tuple[str, str]]:
    """docs/serve.md's alert table: name -> (condition, severity)."""
    section = SERVE_DOC.read_text().split("\n## Alerts", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(Xfleet\w+)` \| (.*) \| (\w+) \|$", section, re.M)
    assert rows, "no alert table in docs/serve.md's Alerts section"
    return {name: (cond, severity) for name, cond, severity in rows}


def test_promtool_checks_the_rules() -> None:
    promtool("check", "rules", str(RULES.relative_to(ROOT)))


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))


def test_the_rules_are_the_alerts_of_the_docs_table() -> None:
    table, got = documented(), rules()
    assert sorted(got) == sorted(table), "docs/serve.md's table and the rules file differ"
    for name, (cond, severity) in table.items():
        rule = got[name]
        assert rule["labels"]["severity"] == severity, name
        said = re.search(r"for (\d+) (min|h)\b", cond)
        if said is None:
            assert "for" not in rule, f"{name}: the table gives no `for`, the rule has one"
            continue
        assert "for" in rule, f"{name}: the table says {said.group(0)!r}, the rule has no for"
        assert seconds(rule["for"]) == int(said.group(1)) * (60 if said.group(2) == "min"
                                                             else 3600), name
        assert {"summary", "description"} <= set(rule["annotations"]), name


def test_every_rule_has_a_case_that_fires_and_one_that_must_not() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for group in doc["tests"]:
        for case in group["alert_rule_test"]:
            (fires if case["exp_alerts"] else quiet).add(case["alertname"])
    got = rules()
    assert fires == set(got), f"no firing case for {sorted(set(got) - fires)}"
    # a rule with a `for` has a case before it elapses; every case lists exactly the alerts
    # expected, so the other series of its group (a healthy pool) are cases that must not fire
    waits = {name for name, rule in got.items() if "for" in rule}
    assert waits <= quiet, f"no case before the `for` of {sorted(waits - quiet)}"


def test_xfleet_status_judges_the_rules_alerts_with_their_severities() -> None:
    got = rules()
    assert set(alerts.SEVERITY) | set(alerts.PROMETHEUS_ONLY) == set(got)
    assert not set(alerts.SEVERITY) & set(alerts.PROMETHEUS_ONLY)
    assert {n: got[n]["labels"]["severity"] for n in alerts.SEVERITY} == alerts.SEVERITY


# the numbers each rule's expression holds, as THRESHOLDS keys
NUMBERS = {
    "XfleetPoolCapacityHigh": (r"xfleet_pool_capacity_ratio > ([\d.]+)$",
                               ["capacity_warning"]),
    "XfleetPoolCapacityCritical": (r"xfleet_pool_capacity_ratio > ([\d.]+)$",
                                   ["capacity_critical"]),
    "XfleetPoolFillingUp": (r'xfleet_pool_days_until\{threshold="(\d+)"\} < ([\d.]+)$',
                            ["fill_percent", "fill_days"]),
    "XfleetPoolOvercommitted": (r"xfleet_pool_overcommit_ratio > ([\d.]+)$", ["overcommit"]),
    "XfleetScrubOverdue": (r"\(time\(\) - xfleet_pool_last_scrub_timestamp_seconds\) > "
                           r"(\d+) \* 86400", ["scrub_days"]),
    "XfleetMirrorStale": (r"^xfleet_node_mirror_lag_seconds > (\d+)", ["mirror_lag"]),
    "XfleetEventGaps": (r"increase\(xfleet_node_event_gaps_total\[(\w+)\]\) > 0$",
                        ["event_gap_window"]),
}


@pytest.mark.parametrize("name", sorted(NUMBERS))
def test_the_thresholds_of_xfleet_status_are_the_rules_numbers(name: str) -> None:
    pattern, keys = NUMBERS[name]
    expr = " ".join(rules()[name]["expr"].split())
    m = re.search(pattern, expr)
    assert m is not None, f"{name}: {expr!r} does not match {pattern!r}"
    for key, text in zip(keys, m.groups(), strict=True):
        value = seconds(text) if key == "event_gap_window" else float(text)
        assert value == alerts.THRESHOLDS[key], (
            f"{name}: the rule says {text}, xfleet.ops.alerts.THRESHOLDS[{key!r}] is "
            f"{alerts.THRESHOLDS[key]}")


def test_every_threshold_is_in_a_rule() -> None:
    assert {k for _, keys in NUMBERS.values() for k in keys} == set(alerts.THRESHOLDS)
