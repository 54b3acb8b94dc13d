"""The `upgrade_target` step kind: its preflight runs in --check too; the simulated fleet has no
target daemon, so the step fails with why and file:line, and nothing is journaled. (For real:
tests/lab/test_upgrades_real.py.)"""

from __future__ import annotations

from pathlib import Path

from unit.playbook.plays import Fleet, play_file, write
from xfleet import mirror


def test_an_upgrade_without_targets_is_refused_in_check_mode(fleet: Fleet,
                                                              tmp_path: Path) -> None:
    inv, _, _ = fleet
    pkg = tmp_path / "t_1.1.pkg"
    pkg.write_text("1.1")
    path = write(tmp_path, f"- sync: {{}}\n- upgrade_target: {{version: '1.1', package: "
                 f"'1.1={pkg}'}}\n")
    report = play_file(inv, path, check=True)
    assert report.state == "failed" and [s.state for s in report.steps] == ["done", "failed"]
    assert "no node in the inventory has a target" in (report.steps[1].error or "")
    assert report.steps[1].line == 2
    conn = mirror.connect(inv.mirror)
    assert conn.execute("SELECT count(*) FROM play_runs").fetchone()[0] == 0
