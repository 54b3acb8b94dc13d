"""`xfleet compression` and `xfleet report compression` (xfleet/cli/compression.py) on the
simulated fleet: a plan, its dry run, and the report. Apply, resume, estimate and the audit
are tested in tests/unit/ops/test_compression.py."""

from __future__ import annotations

from pathlib import Path

from .conftest import Cli, digest

POLICY = "rules:\n  - name: zone a\n    match: {node: n1}\n    compression: zstd\n"


def test_plan_dry_run_and_report_change_nothing(synced: Path, cli: Cli, tmp_path: Path) -> None:
    inv, db = str(synced), synced.parent / "mirror.db"
    pol = tmp_path / "policy.yaml"
    pol.write_text(POLICY)
    before = digest(db)
    plan = cli("-i", inv, "compression", "plan", "--policy", str(pol), "--json")
    assert plan.code == 0, plan.err
    p = plan.json()
    assert p["volumes"] > 0 and {g["node"] for g in p["groups"]} == {"n1"}
    assert all(g["new"] == "zstd" for g in p["groups"])
    dry = cli("-i", inv, "compression", "apply", "--policy", str(pol), "--dry-run")
    assert dry.code == 0 and "dry run:" in dry.out and "n1: zfs set compression=zstd" in dry.out
    assert cli("-i", inv, "compression", "runs", "--json").json() == []
    rep = cli("-i", inv, "report", "compression", "--by", "node", "--no-policy", "--json")
    assert rep.code == 0, rep.err
    assert {g["group"] for g in rep.json()["rows"]} == {"n1", "n2"}
    assert digest(db) == before
