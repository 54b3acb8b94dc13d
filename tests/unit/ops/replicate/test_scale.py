"""A round's remote commands grow with the volumes that changed, never with the volumes a policy
replicates: after the first round, CHANGED volumes written and snapshotted are CHANGED streams,
and as many commands on a node of N replicated volumes as on one of N/5.

N is small: the simulator copies a node's overlay (every dataset created since its generated
base) on each change, so a first full round of N volumes costs O(N^2) on it (~0.1 s a stream
at N = 200, ~60 s for N = 500); the lab and the benchmarks measure real scale."""

from __future__ import annotations

from pathlib import Path

from conftest import write_sim_inventory

from unit.ops.replicate.conftest import policies, run_round
from xfleet.fleet import inventory
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport

CHANGED = 20
POLICY = policies("""\
policies:
  - name: rep
    match: {name: "tank/rep/*"}
    schedule: {every: 15m}
    keep: {frequently: 1}
    replicate: [{node: n2, pool: tank, rpo: 1h}]
""")


def _round_after_changes(tmp_path: Path, volumes: int) -> tuple[int, int, list[str]]:
    """(streams, remote commands, the volumes sent) of the round after CHANGED of `volumes`
    replicated volumes changed."""
    inv = inventory.load(write_sim_inventory(tmp_path / "fleet.yaml", {
        "n1": {"volumes": 1, "seed": 4}, "n2": {"volumes": 1, "seed": 5}}))
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "-p", "tank/rep"])
    vols = [f"tank/rep/v{i:05d}" for i in range(volumes)]
    for v in vols:
        t.run(["zfs", "create", "-s", "-V", "1G", v])
    t.run(["zfs", "snapshot", *(f"{v}@r1" for v in vols)])
    assert sync(inv).ok
    first = run_round(inv, POLICY)
    assert (len(first.sent), first.failed) == (volumes, [])
    changed = vols[::volumes // CHANGED][:CHANGED]
    for v in changed:
        t.write(v, 1 << 20)
    t.run(["zfs", "snapshot", *(f"{v}@r2" for v in changed)])
    assert sync(inv).ok
    res = run_round(inv, POLICY)
    assert res.failed == [] and res.replicas == volumes and res.due == CHANGED
    assert all(s["how"] == "incremental" and s["snapshot"] == "r2" for s in res.sent)
    return len(res.sent), res.commands, sorted(s["volume"] for s in res.sent)


def test_round_commands_grow_with_the_changes_not_the_volumes(tmp_path: Path) -> None:
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    big = _round_after_changes(tmp_path / "big", 5 * CHANGED)
    small = _round_after_changes(tmp_path / "small", CHANGED)
    assert big[0] == small[0] == CHANGED
    assert len(big[2]) == CHANGED and big[2] != small[2]  # a fifth of big's volumes
    assert big[1] == small[1], (big[1], small[1])
