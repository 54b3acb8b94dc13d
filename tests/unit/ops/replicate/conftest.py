"""Helpers of the standing replica tests: the moves' fleet (n1 with tank/app/db, 1G sparse with
snapshots @a and @b, and n2; synced), a policy replicating tank/app/* to n2, a round in its
own connections, and what the simulated nodes and the mirror say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import write_sim_inventory

from unit.ops.moves.conftest import fleet as fleet  # the moves' fixtures, here too
from unit.ops.moves.conftest import fleet_at as fleet_at
from xfleet import mirror
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops.replicate import journal
from xfleet.ops.replicate.round import Round, RoundResult
from xfleet.ops.snapshots.policy import Policies, parse_policies
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport

VOL = "tank/app/db"
# no `node` in the match: the copies on n2 (tank/app/db there) are taken by it too, so the
# tests show that a copy is still never snapshotted, pruned or replicated by the policy
POLICY = """\
policies:
  - name: app
    match: {name: "tank/app/*"}
    schedule: {every: 15m}
    keep: {frequently: 1}
    replicate: [{node: n2, pool: tank, rpo: 1h}]
"""


def policies(text: str = POLICY) -> Policies:
    return parse_policies(text)


def run_round(inv: inventory.Inventory, pol: Policies | None = None,
              conns: Connections | None = None, **kw: Any) -> RoundResult:
    """One round of `pol` (POLICY by default) in its own connections, or in `conns`."""
    if conns is not None:
        return Round(inv, inv.mirror, conns, **kw).run(pol or policies())
    with Connections(inv.hosts, state_dir=inv.state_dir) as own:
        return Round(inv, inv.mirror, own, **kw).run(pol or policies())


def replica(inv: inventory.Inventory, spec: str = f"n1:{VOL}") -> journal.Replica:
    conn = mirror.connect(inv.mirror)
    try:
        return journal.find(conn, spec)
    finally:
        conn.close()


def lines(t: SimTransport, *argv: str) -> list[str]:
    return t.run(list(argv)).stdout.splitlines()


def snapshots(t: SimTransport, volume: str = VOL) -> dict[str, str]:
    """{short snapshot name: guid} of `volume`, oldest first."""
    rows = [x.split("\t") for x in lines(t, "zfs", "list", "-H", "-p", "-o",
                                         "name,guid,createtxg", "-t", "snapshot", "-d", "1",
                                         volume)]
    return {name.split("@", 1)[1]: guid for name, guid, _ in
            sorted(rows, key=lambda row: int(row[2]))}


def holds(t: SimTransport, volume: str = VOL) -> list[tuple[str, str]]:
    """(snapshot, tag) of every hold on `volume`'s snapshots."""
    snaps = [f"{volume}@{s}" for s in snapshots(t, volume)]
    out = t.run(["zfs", "holds", "-H", *snaps], check=False).stdout.splitlines() if snaps \
        else []
    return [(x.split("\t")[0], x.split("\t")[1]) for x in out]


def bookmarks(t: SimTransport, volume: str = VOL) -> list[str]:
    return lines(t, "zfs", "list", "-H", "-o", "name", "-t", "bookmark", "-d", "1", volume)


def prop(t: SimTransport, name: str, dataset: str = VOL) -> tuple[str, str]:
    """(value, source) of property `name` of `dataset`."""
    value, source = lines(t, "zfs", "get", "-H", "-o", "value,source", name, dataset)[0] \
        .split("\t")
    return value, source


def change(inv: inventory.Inventory, t: SimTransport, snap: str, nbytes: int = 5 << 20,
           volume: str = VOL) -> None:
    """A client writes `nbytes` to `volume`, which is then snapshotted @`snap`; synced."""
    t.write(volume, nbytes)
    t.run(["zfs", "snapshot", f"{volume}@{snap}"])
    assert sync(inv).ok


def rep_fleet(tmp_path: Path, volumes: int) -> tuple[inventory.Inventory, SimTransport,
                                                     list[str]]:
    """n1 with `volumes` new volumes tank/rep/vNNNNN (1G sparse, a snapshot @r1 each, no UUID)
    and n2, one generated volume each; synced. Returns the inventory, n1 and the volumes."""
    tmp_path.mkdir(exist_ok=True)
    inv = inventory.load(write_sim_inventory(tmp_path / "fleet.yaml", {
        "n1": {"volumes": 1, "seed": 4}, "n2": {"volumes": 1, "seed": 5}}))
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "-p", "tank/rep"])
    vols = [f"tank/rep/v{i:05d}" for i in range(volumes)]
    for v in vols:
        t.run(["zfs", "create", "-s", "-V", "1G", v])
    t.run(["zfs", "snapshot", *(f"{v}@r1" for v in vols)])
    assert sync(inv).ok
    return inv, t, vols
