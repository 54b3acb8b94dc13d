"""`xfleet lab` (xfleet/cli/lab.py) without a lab: what it says when none is up. The lab itself
(build, up, reset, down on real VMs) is tested in tests/lab/."""

from __future__ import annotations

from pathlib import Path

from .conftest import Cli


def test_without_a_lab_status_is_empty_and_ssh_says_how_to_start(cli: Cli,
                                                                  tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = cli("lab", "status", "--json", env=env)
    assert r.code == 0 and r.json() == []
    r = cli("lab", "status", env=env)
    assert r.code == 0 and "no lab nodes (run 'xfleet lab up')" in r.out
    r = cli("lab", "ssh", "lab1", "zfs", "list", env=env)
    assert r.code == 1 and "no lab state in" in r.err and "xfleet lab up" in r.err
    r = cli("lab", "up", "--nodes", "9", env=env)
    assert r.code == 2 and "--nodes" in r.err  # refused before anything starts
