"""The compression step kinds: the compress-free-tier example, checked, applied and reported on
the simulated fleet."""

from __future__ import annotations

from pathlib import Path

from conftest import ROOT, run_cli, write_sim_inventory

from unit.playbook.plays import EXAMPLES
from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.ops.sync import sync


def test_compress_free_tier_example_checks_applies_and_reports_on_the_sim(
        tmp_path: Path) -> None:
    policy = ROOT / "inventory" / "compression.yaml"
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"volumes": 40, "seed": 4},
                                                             "n3": {"volumes": 30, "seed": 6}},
                                   extra=f"    compression_policy: {policy}")
    inv = inventory.load(inv_path)
    assert sync(inv).ok
    report = tmp_path / "free.html"
    args = ("-i", str(inv_path), "play", str(EXAMPLES / "compress-free-tier.yaml"),
            "--var", "tier=tank/t000*/*", "--var", f"report={report}")
    conn = mirror.connect(inv.mirror)

    def settings() -> dict[tuple[str, str], str]:
        return {(r[0], r[1]): r[2] for r in conn.execute(
            "SELECT node, name, compression FROM datasets WHERE type = 'volume' AND "
            "name GLOB 'tank/t000*/*'")}

    before = settings()
    r = run_cli(*args, "--check")
    assert r.code == 0, r.out + r.err
    assert "zfs set compression=" in r.out and settings() == before and not report.exists()
    r = run_cli(*args, "--json")
    assert r.code == 0, r.out + r.err
    assert r.json()["state"] == "done"
    after = settings()
    # tenants t0000-t0099 are hot: the policy says lz4 for them (inventory/compression.yaml)
    assert after and set(after.values()) == {"lz4"} and after != before
    audit = conn.execute("SELECT count(*) FROM compression_changes").fetchone()[0]
    assert audit == sum(1 for v in before.values() if v not in ("lz4", "on"))
    assert "compression" in report.read_text()
    r = run_cli(*args, "--json")  # again: nothing left to change
    assert r.code == 0 and conn.execute("SELECT count(*) FROM compression_changes"
                                        ).fetchone()[0] == audit
