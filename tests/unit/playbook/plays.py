"""Writing and playing playbooks on a simulated fleet, for the playbook tests (tests/unit/playbook
and its steps/); the `fleet` fixture is in conftest.py."""

from __future__ import annotations

from pathlib import Path

from conftest import ROOT, write_sim_inventory

from xfleet import playbook
from xfleet.fleet import inventory
from xfleet.fleet.connections import Connections
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport

Fleet = tuple[inventory.Inventory, Path, SimTransport]
EXAMPLES = ROOT / "playbooks"


def acme_fleet(tmp_path: Path, mirror_at: str | None = None) -> Fleet:
    """n1 (60 volumes) with tenant acme's db (1G), cache (2G) and tiny (512M), and n2 (20
    volumes), synced into the mirror at `mirror_at` (an SQLite path or a PostgreSQL URL;
    default: mirror.db beside the inventory); the inventory, its path, and n1's transport."""
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"volumes": 60, "seed": 4},
                                                             "n2": {"volumes": 20, "seed": 5}})
    if mirror_at is not None:
        text = inv_path.read_text()
        assert "mirror: mirror.db\n" in text, text
        inv_path.write_text(text.replace("mirror: mirror.db\n", f"mirror: {mirror_at}\n"))
    inv = inventory.load(inv_path)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "-p", "tank/acme"])
    for name, size in (("db", "1G"), ("cache", "2G"), ("tiny", "512M")):
        t.run(["zfs", "create", "-s", "-V", size, "-o", "xfleet:tenant=acme",
               f"tank/acme/{name}"])
    assert sync(inv).ok
    return inv, inv_path, t


def write(tmp_path: Path, text: str, name: str = "pb.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def play_file(inv: inventory.Inventory, path: Path, *, check: bool = False,
              variables: dict[str, str] | None = None) -> playbook.PlayReport:
    pb = playbook.load(path, variables)
    with Connections(inv.hosts, state_dir=inv.state_dir) as conns:
        return playbook.play(inv, inv.mirror, pb, conns, check=check)


def only3_fleet(tmp_path: Path, *, tenant: str | None = None,
                alone: bool = False) -> tuple[inventory.Inventory, Path]:
    """n1 (10 volumes) and n3 with tank/only3/v0, v1, v2 (1G each, of `tenant`), synced; with
    `alone`, n3's generated volumes are gone, so those three are all it holds."""
    inv_path = write_sim_inventory(tmp_path / "fleet.yaml", {"n1": {"volumes": 10, "seed": 1},
                                                             "n3": {"volumes": 1, "seed": 3}})
    inv = inventory.load(inv_path)
    t = SimTransport(inv.hosts["n3"], state_dir=inv.state_dir)
    if alone:
        t.run(["zfs", "destroy", "-r", "tank/t0000"])
    t.run(["zfs", "create", "-p", "tank/only3"])
    props = ["-o", f"xfleet:tenant={tenant}"] if tenant else []
    for i in range(3):
        t.run(["zfs", "create", "-s", "-V", "1G", *props, f"tank/only3/v{i}"])
    assert sync(inv).ok
    return inv, inv_path
