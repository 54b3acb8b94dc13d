"""`xfleet inventory check|show|trust` (xfleet/cli/inventory.py), and a bad inventory's clear
error."""

from __future__ import annotations

from pathlib import Path

from .conftest import Cli, digest


def test_inventory_check_and_show(sim_fleet: Path, cli: Cli) -> None:
    r = cli("-i", str(sim_fleet), "inventory", "check", "--json")
    assert r.code == 0
    assert {h["node"] for h in r.json()} == {"n1", "n2"}
    s = cli("-i", str(sim_fleet), "inventory", "show", "n1", "--json").json()
    kind = next(x for x in s if x["setting"] == "kind")
    assert kind["value"] == "sim" and f"{sim_fleet}:5" in kind["source"]
    assert not [x for x in s if x["setting"].startswith("dhchap_")]  # an initiator's only
    missing = cli("-i", str(sim_fleet), "inventory", "show", "n9")
    assert missing.code == 2 and "no host or group named 'n9'" in missing.err


def test_bad_inventory_clear_error_mirror_intact(synced: Path, cli: Cli, tmp_path: Path) -> None:
    db = synced.parent / "mirror.db"
    before = digest(db)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"all:\n  vars:\n    mirror: {db}\n  hosts:\n    n1:\n      kind: sim\n"
                   "      prot: 22\n")
    r = cli("-i", str(bad), "sync")
    assert r.code == 2
    assert f"{bad}:7" in r.err and "prot" in r.err and "did you mean 'port'" in r.err
    assert "Traceback" not in r.err
    assert digest(db) == before


def test_trust_is_for_ssh_nodes_only(sim_fleet: Path, cli: Cli) -> None:
    r = cli("-i", str(sim_fleet), "inventory", "trust", "n1", "--yes")
    assert r.code == 2 and "n1 is a sim node; only ssh nodes have host keys" in r.err
    r = cli("-i", str(sim_fleet), "inventory", "check")
    assert r.code == 0 and "OK, 2 nodes" in r.out
