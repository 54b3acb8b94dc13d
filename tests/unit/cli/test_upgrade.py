"""`xfleet upgrade|rollouts|target` (xfleet/cli/upgrade.py) on the simulated fleet, which has no
NVMe-oF target: the commands refuse clearly, and the journal is empty. Rollouts themselves
(preflight, batches, pause, resume, rollback) are tested in tests/unit/ops/rollout/."""

from __future__ import annotations

from pathlib import Path

from .conftest import Cli


def test_without_targets_the_commands_refuse_clearly(synced: Path, cli: Cli,
                                                     tmp_path: Path) -> None:
    inv = str(synced)
    assert cli("-i", inv, "rollouts", "list", "--json").json() == []
    r = cli("-i", inv, "target", "status")
    assert r.code == 2 and "no node in the inventory has a target" in r.err
    pkg = tmp_path / "t_1.1_all.deb"
    pkg.write_bytes(b"!<arch>\n")
    r = cli("-i", inv, "upgrade", "target", "1.1", "--package", str(pkg), "--dry-run")
    assert r.code == 2 and "no node in the inventory has a target" in r.err
    for what in ("pause", "stop", "show", "resume"):
        r = cli("-i", inv, "rollouts", what, "7", "--json")
        assert r.code == 2 and r.json()["error"]["message"] == "no rollout 7", what
