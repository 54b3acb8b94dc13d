"""`xfleet demo` and `xfleet tui` (xfleet/cli/tui.py); the dashboard itself is tested in
tests/tui/."""

from __future__ import annotations

from pathlib import Path

from conftest import write_sim_inventory

from .conftest import Cli


def test_demo_tour_commands_all_work(tmp_path: Path, cli: Cli) -> None:
    """Every command the demo's tour suggests runs and prints something (on a small fleet)."""
    import subprocess
    import sys

    from conftest import ROOT

    inv = write_sim_inventory(tmp_path / "demo.yaml", {"n1": {"seed": 1, "volumes": 300},
                                                       "n2": {"seed": 2, "volumes": 300}})
    r = cli("-i", str(inv), "demo", "--no-tui")
    assert r.code == 0, r.err
    # what this inventory has not (a target, a policy) is skipped or left out, and said
    assert "upgrade" in r.out and "skipped: no node of the inventory has a target" in r.out
    assert "target status" not in r.out and "compression plan" not in r.out
    tour = [line.strip() for line in r.out.replace("\\\n", "").splitlines()
            if line.strip().startswith(".venv/bin/xfleet") and not line.strip().endswith(" tui")]
    assert len(tour) >= 6
    for cmd in tour:
        shell = cmd.replace(".venv/bin/xfleet", f"{sys.executable} -m xfleet")
        p = subprocess.run(["bash", "-c", shell], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0 and p.stdout.strip(), (cmd, p.stderr)


def test_the_demo_fleet_is_the_checkouts_inventory() -> None:
    from conftest import ROOT

    from xfleet.cli.tui import DEMO_INVENTORY

    assert DEMO_INVENTORY == ROOT / "inventory" / "demo.yaml" and DEMO_INVENTORY.is_file()
