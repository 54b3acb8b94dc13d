"""Fixtures and helpers of the move tests: a small simulated fleet with a volume to move."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_sim_inventory

from xfleet.fleet import inventory
from xfleet.mirror.backend import Connection
from xfleet.mirror.store import inserted_id
from xfleet.ops.sync import sync
from xfleet.sim import SimTransport

Fleet = tuple[inventory.Inventory, Path, SimTransport]  # the inventory, its file, node n1


def with_mirror(inv_path: Path, mirror_at: str) -> Path:
    """The inventory `inv_path` (written by write_sim_inventory) with its mirror at
    `mirror_at`: an SQLite path or a PostgreSQL URL (the `mirror_at` fixture)."""
    text = inv_path.read_text()
    assert "mirror: mirror.db\n" in text, text
    inv_path.write_text(text.replace("mirror: mirror.db\n", f"mirror: {mirror_at}\n"))
    return inv_path


def make_fleet(tmp_path: Path, mirror_at: str = "mirror.db") -> Fleet:
    """n1 (80 volumes and tank/app/db, 1G sparse with snapshots @a and @b) and n2, synced
    into the mirror at `mirror_at`."""
    inv_path = with_mirror(write_sim_inventory(
        tmp_path / "fleet.yaml", {"n1": {"volumes": 80, "seed": 4},
                                  "n2": {"volumes": 20, "seed": 5}}), mirror_at)
    inv = inventory.load(inv_path)
    t = SimTransport(inv.hosts["n1"], state_dir=inv.state_dir)
    t.run(["zfs", "create", "-p", "tank/app"])
    t.run(["zfs", "create", "-s", "-V", "1G", "-o", "compression=zstd", "-o",
           "xfleet:tenant=acme", "tank/app/db"])
    t.run(["zfs", "snapshot", "tank/app/db@a"])
    t.run(["zfs", "snapshot", "tank/app/db@b"])
    assert sync(inv).ok
    return inv, inv_path, t


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


@pytest.fixture
def fleet_at(tmp_path: Path, mirror_at: str) -> Fleet:
    """The same fleet on each engine of the mirror (SQLite, PostgreSQL)."""
    return make_fleet(tmp_path, mirror_at)


def move_row(conn: Connection, src: str, dst: str, state: str, pid: int | None,
              beat: float) -> int:
    cur = conn.execute(
        "INSERT INTO moves (volume, source_node, target_node, target_volume, state, send_flags,"
        " receive_properties, verify, options, created_at, updated_at, pid, host, heartbeat) "
        "VALUES ('tank/x', ?, ?, 'tank/x', ?, '[]', '{}', 'sampled', '{}', 0, 0, ?, "
        "'elsewhere', ?) RETURNING id", (src, dst, state, pid, beat))
    return inserted_id(cur)
